"""Task `bundle`: a self-contained folder a competition notebook runs offline (`birdclef.inference.bundle`).

python run.py task=bundle "predict.models=[A.onnx,B_openvino]" task.output=DIR
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from birdclef.core.errors import ConfigError
from birdclef.inference.bundle import (
    ALLOWED_IMPORTS,
    check_bundle,
    check_imports,
    check_models,
    check_settings,
    column_file,
    replace_folder,
    requirement_names,
    write_bundle,
)
from birdclef.inference.runtime import settings_from_group
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


@task
def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    target = Path(cfg.task.output) if cfg.task.output else out / "bundle"
    occupied = target.exists() and (not target.is_dir() or any(target.iterdir()))
    if occupied and not (cfg.task.overwrite and target.is_dir()):
        raise ConfigError(
            f"task.output={target} exists and is not an empty folder: choose another "
            "task.output, or set task.overwrite=true to replace the folder."
        )
    root = Path(cfg.data.root) if cfg.data.root is not None else None
    settings = settings_from_group(cfg.predict, root)
    kinds = check_models(settings["models"])
    if cfg.task.workers is not None:
        settings["workers"] = int(cfg.task.workers)
    check_settings(settings)
    try:  # an unknown extra fails here, not after the models are copied
        requirement_names(kinds, list(cfg.task.extras or []))
    except ValueError as err:
        raise ConfigError(f"{err}; [] bundles the minimum.") from err
    if settings["taxonomy"] is None:
        log.warning(
            "no predict.taxonomy and no sample_submission.csv / taxonomy.csv in data.root=%s: "
            "the submission's columns follow the first model's classes",
            root,
        )
    columns = column_file(settings["taxonomy"])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        wheels = (
            None
            if cfg.task.wheels is None
            else {"python": str(cfg.task.python), "source": str(cfg.task.wheels)}
        )
        settings = write_bundle(tmp, settings, kinds, columns, wheels, list(cfg.task.extras or []))
        problems = check_imports(tmp)
        if problems:
            raise RuntimeError(
                "the bundle would need packages its host may lack (birdclef.inference may import "
                f"only the standard library and {sorted(ALLOWED_IMPORTS)}): " + "; ".join(problems)
            )
        check_bundle(tmp, settings)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [p for p in target.rglob("*") if p.is_file()]
    metrics = {
        "bundle/bytes": sum(p.stat().st_size for p in files),
        "bundle/models": len(settings["models"]),
        "bundle/files": len(files),
    }
    log.info(
        "wrote %s: %d models, %d files, %.1f MB; run it with `python %s SOUNDSCAPES`",
        target,
        metrics["bundle/models"],
        metrics["bundle/files"],
        metrics["bundle/bytes"] / 1e6,
        target / "predict.py",
    )
    return metrics
