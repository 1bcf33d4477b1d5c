"""Task `distill`: train the `model=` student on its labels and on frozen teachers' scores.

    python run.py task=distill "teacher.models=[<run>/checkpoints/best.ckpt]" model=melcnn

The teachers are project checkpoints (`teacher.models`; several: the mean of their scores)
that share one front end: the DataModule caches the training recordings a second time with
it and every training window carries the teachers' features of the same span
(`teacher_features`). With `teacher.cross_fit=true` each teacher's run folder's split.csv
says which recordings it trained on, and a window is taught only by the teachers that did
not (K teachers trained with `data.folds=K data.fold=k`). Training, checkpoints,
evaluation and `metrics.json` are those of `birdclef.tasks.train.run`, with a
`birdclef.modules.distill.Distiller` as the module; the student's checkpoint is a plain
`Classifier` checkpoint. `metrics.json` adds `distill/teacher` (the checkpoints' paths,
comma-separated), `distill/teachers`, `distill/cross_fit`, `distill/temperature`,
`distill/kd_weight` and `distill/teacher_soundscape_auc` (the mean of the test soundscape
AUCs the teachers' own runs recorded, NaN when one is unknown), for comparison.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from birdclef.errors import ConfigError
from birdclef.modules.classifier import Classifier
from birdclef.modules.distill import Distiller
from birdclef.tasks.train import run as train

log = logging.getLogger(__name__)

MIXING = ("mixup_p", "background_p")  # augmentations the teacher's features would not follow


def teacher_paths(cfg: DictConfig) -> list[Path]:
    """The teacher checkpoints of `teacher.models`, checked."""
    models = [Path(m) for m in cfg.teacher.models or []]
    if not models:
        raise ConfigError(
            'task=distill needs a teacher: give "teacher.models=[<run>/checkpoints/best.ckpt]" '
            "(several checkpoints: the mean of their scores)."
        )
    for path in models:
        if path.suffix != ".ckpt":
            raise ConfigError(
                f"teacher.models=[{path}]: task=distill needs project .ckpt files (it reads the "
                "teachers' logits and front end); exported .onnx or OpenVINO models cannot teach."
            )
        if not path.is_file():
            raise ConfigError(
                f"teacher.models=[{path}] not found; give a run's checkpoints/best.ckpt."
            )
    return models


def load_teachers(paths: list[Path]) -> tuple[list[Classifier], object]:
    """The frozen teachers and their one front end (as their checkpoints record it)."""
    teachers = [Classifier.from_checkpoint(p).requires_grad_(False) for p in paths]
    frontends = [t.hparams.get("frontend") for t in teachers]
    for path, frontend in zip(paths, frontends, strict=True):
        if frontend is None:
            raise ConfigError(f"teacher {path} does not record its front end; retrain it.")
        if frontend != frontends[0]:
            raise ConfigError(
                f"teachers {paths[0]} and {path} read different front ends "
                f"({frontends[0].get('_target_')} and {frontend.get('_target_')}, or other "
                "settings): distil from teachers that share one (e.g. BirdNET heads)."
            )
    return teachers, instantiate(frontends[0])


def trained_on(path: Path) -> set[str]:
    """The recordings the teacher's run trained on (`split == "train"` in its split.csv)."""
    split = path.parent.parent / "split.csv"
    try:
        rows = pd.read_csv(split)
        return set(rows.loc[rows["split"] == "train", "filename"])
    except (OSError, KeyError, pd.errors.ParserError) as err:
        raise ConfigError(
            f"teacher.cross_fit=true needs each teacher's split.csv ({split}: {err}); give "
            "checkpoints inside their run folders."
        ) from err


def recorded_auc(path: Path) -> float:
    """The teacher run's `test/soundscape_auc` from its metrics.json, NaN when absent."""
    metrics = path.parent.parent / "metrics.json"
    try:
        return float(json.loads(metrics.read_text())["test/soundscape_auc"])
    except (OSError, KeyError, ValueError):
        return math.nan


def run(cfg: DictConfig) -> dict:
    """Distil `teacher.models` into the `model=` student; the metrics of `birdclef.tasks.train.run`."""
    paths = teacher_paths(cfg)
    augment = cfg.augment
    mixing = [k for k in MIXING if float(augment.get(k) or 0.0) > 0]
    if mixing:
        raise ConfigError(
            f"augment {', '.join(f'{k}={augment[k]}' for k in mixing)} mixes windows the teacher "
            "does not see mixed; distil with augment=none or augment=specaugment."
        )
    teachers, teacher_frontend = load_teachers(paths)
    t = cfg.teacher
    cross_fit = bool(t.get("cross_fit", False))
    seen = [trained_on(p) for p in paths] if cross_fit else None
    log.info("distilling %d teacher(s) %s (%s) at T=%g, kd_weight=%g%s", len(paths),
             ", ".join(map(str, paths)), teachers[0].hparams["net"]["_target_"], t.temperature,
             t.kd_weight, ", cross-fitted" if cross_fit else "")  # fmt: skip
    factory = functools.partial(
        Distiller, teacher=teachers, temperature=float(t.temperature), kd_weight=float(t.kd_weight)
    )
    extra = {
        "distill/teacher": ",".join(map(str, paths)),
        "distill/teachers": float(len(paths)),
        "distill/cross_fit": float(cross_fit),
        "distill/teacher_soundscape_auc": float(np.mean([recorded_auc(p) for p in paths])),
        "distill/temperature": float(t.temperature),
        "distill/kd_weight": float(t.kd_weight),
    }
    return train(
        cfg, module_factory=factory, teacher_frontend=teacher_frontend, extra_metrics=extra,
        teacher_trained_on=seen,
    )  # fmt: skip
