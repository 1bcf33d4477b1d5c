"""A net's config completed from the data: what it derives from the front end instead of repeating it."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from birdclef.core.errors import ConfigError


def net_config(model: Mapping, frontend) -> dict:
    """`model` (a net's `_target_` config) with its input size from `frontend`, checked.

    A net class may declare `input_size_arg` (the constructor argument that must equal the
    front end's `n_features`: bands or embedding size) and `reads_embeddings` (it needs an
    embedding front end such as BirdNET's, not an image of frames).
    """
    net = (
        OmegaConf.to_container(model, resolve=True)
        if isinstance(model, DictConfig)
        else dict(model)
    )
    cls = get_class(str(net["_target_"]))
    if getattr(cls, "reads_embeddings", False) and not getattr(frontend, "embeddings", False):
        raise ConfigError(
            f"model={cls.__name__} reads embeddings, but frontend={type(frontend).__name__} gives "
            "frames: add frontend=birdnet augment=none (experiment=birdnet sets all three)."
        )
    arg = getattr(cls, "input_size_arg", None)
    if arg is not None:
        net[arg] = int(frontend.n_features)
    return net
