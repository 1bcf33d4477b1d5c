"""Random-number state kept in checkpoints, so a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_states() -> dict:
    """The global CPU torch, numpy and Python generators (those `seed_everything` seeds), as
    values `weights_only` loads.

    They decide the shuffling, dropout and augmentation of the epochs still to come.
    CUDA generators are left out: GPU runs are not bitwise deterministic anyway.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    """Put back the generator states saved by `rng_states`."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
