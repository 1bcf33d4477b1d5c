"""The run envelope: what every task leaves in its folder (config.yaml, run.log, metrics.json)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def add_file_log(output_dir: str | os.PathLike, name: str = "run.log") -> logging.Handler | None:
    """Mirror the `birdclef` and `lightning` loggers into `output_dir/name`.

    Returns None when a root handler already writes into `output_dir` (Hydra's job
    log does under `python run.py`), so lines are not written twice.
    """
    output_dir = Path(output_dir).resolve()
    logging.getLogger("birdclef").setLevel(logging.INFO)
    for existing in logging.getLogger().handlers:
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
