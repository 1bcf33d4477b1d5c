"""Where a run's data is: `data.root`, or the built-in synthetic dataset (generated if absent)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from birdclef.data.synthetic import SynthSpec, ensure_synthetic


def synthetic_root(cfg: DictConfig) -> Path:
    """The folder of the dataset described by `cfg.synth`, generated if absent."""
    return ensure_synthetic(cfg.paths.data_dir, SynthSpec.from_config(cfg.synth))


def data_root(cfg: DictConfig) -> Path:
    """`data.root`, or the built-in synthetic dataset (generated if absent)."""
    if cfg.data.root is not None:
        return Path(cfg.data.root)
    return synthetic_root(cfg)
