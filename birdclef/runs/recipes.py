"""Named recipes composed as `python run.py` would compose them, for tasks that run other runs.

A recipe is a list of overrides (`["experiment=floor"]`, `["model=cnn", "label.m=0.65"]`) or
one string of them. `compose_run` composes the project config with them, inside a running
Hydra app (`python run.py task=evaluate`) or outside one (tests, scripts).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig

from birdclef.core.errors import ConfigError
from birdclef.runs.renamed import check_config, new_name

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
OWN_KEYS = ("task", "hydra", "experiment", "launcher", "rerun")  # not passed on to a recipe


def recipe_overrides(name: str, value) -> list[str]:
    """A recipe's overrides from its config value: a list of overrides or one string of them."""
    if value is None:
        return []
    items = shlex.split(value) if isinstance(value, str) else list(value)
    if not all(isinstance(o, str) and "=" in o for o in items):
        raise ConfigError(
            f"recipe {name!r}: {list(items)} must be overrides like experiment=floor or label.m=0.65."
        )
    old = [o for o in items if new_name(o)]
    if old:
        raise ConfigError(
            f"recipe {name!r}: {old[0]} is an old config name; write {new_name(old[0])}."
        )
    return items


def compose_run(overrides: list[str]) -> DictConfig:
    """The project config with `overrides`, as `python run.py <overrides>` would compose it."""
    if GlobalHydra.instance().is_initialized():
        cfg = compose("config", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    check_config(cfg)
    return cfg


def command_line_overrides() -> list[str]:
    """This run's command-line overrides that every recipe inherits (not task.*, hydra.*, ...)."""
    if not HydraConfig.initialized():
        return []
    given = HydraConfig.get().overrides.task
    return [o for o in given if o.lstrip("+~").split("=")[0].split(".")[0] not in OWN_KEYS]


def as_list(value) -> list:
    return list(value) if isinstance(value, list | tuple | ListConfig) else [value]
