"""Small shared helpers: atomic writes, stable hashes, run logging."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("birdclef")


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    A killed or failing writer leaves no half-written `path` behind. `suffix` keeps
    the extension for writers that infer the format from it (soundfile, numpy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(
            tmp_path, 0o666 & ~current_umask()
        )  # mkstemp makes it owner-only; a plain file is not
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def write_csv(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short hash of a JSON-serialisable object that is equal across runs and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


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


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a SLURM or job allocation.

    `os.cpu_count()` counts the whole machine; a job that shares it (a SLURM step,
    a submitit_local sweep, a container with a CPU set) must size its threads and
    worker processes from its own share. `BIRDCLEF_CPUS` (set by the sweep helpers)
    and `SLURM_CPUS_PER_TASK` cap the count further.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        count = os.cpu_count() or 1
    for name in ("BIRDCLEF_CPUS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            count = min(count, int(value))
    return max(1, count)
