"""The run envelope: what every task leaves in its folder, written in one place.

`@task` wraps a task's `run(cfg) -> dict`: before it runs, `<output_dir>/config.yaml` (the
resolved config) is written and the `birdclef` and `lightning` loggers are mirrored into
`run.log`; after it returns, its metrics go to `metrics.json`. Files are written atomically
and only by the main process of a multi-process (DDP) run. Tests and other tasks call the
wrapped function directly and get the same folder.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from birdclef.core.io import write_json, write_text

CONFIG = "config.yaml"  # the resolved config
METRICS = "metrics.json"  # what the task returned
LOG = "run.log"


def run_dir(cfg: DictConfig) -> Path:
    """The run's folder (`paths.output_dir`), created."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def main_process() -> bool:
    """False in the non-zero ranks of a multi-process run (they re-run the task)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def write_config(cfg: DictConfig) -> Path:
    path = run_dir(cfg) / CONFIG
    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def task(fn: Callable[..., dict]) -> Callable[..., dict]:
    """Wrap a task's `run(cfg, ...)` in the envelope (config.yaml, run.log, metrics.json)."""

    @functools.wraps(fn)
    def run(cfg: DictConfig, *args: Any, **kwargs: Any) -> dict:
        out, main = run_dir(cfg), main_process()
        handler = add_file_log(out) if main else None
        try:
            if main:
                write_config(cfg)
                (out / METRICS).unlink(missing_ok=True)  # a finished run is one with new metrics
            metrics = fn(cfg, *args, **kwargs)
            if main:
                write_json(out / METRICS, metrics)
            return metrics
        finally:
            remove_file_log(handler)

    return run


def add_file_log(output_dir: str | os.PathLike, name: str = LOG) -> logging.Handler | None:
    """Mirror the `birdclef` and `lightning` loggers into `output_dir/name`.

    Returns None when a handler already writes into `output_dir` (Hydra's job log does under
    `python run.py`; an outer task's envelope does for a task it calls), so lines are not
    written twice.
    """
    output_dir = Path(output_dir).resolve()
    logging.getLogger("birdclef").setLevel(logging.INFO)
    for existing in (*logging.getLogger().handlers, *logging.getLogger("birdclef").handlers):
        target = getattr(existing, "baseFilename", None)
        if target and Path(target).parent == output_dir:
            return None
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / name)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    for logger_name in ("birdclef", "lightning"):
        logging.getLogger(logger_name).addHandler(handler)
    return handler


def remove_file_log(handler: logging.Handler | None) -> None:
    if handler is None:
        return
    for logger_name in ("birdclef", "lightning"):
        logging.getLogger(logger_name).removeHandler(handler)
    handler.close()
