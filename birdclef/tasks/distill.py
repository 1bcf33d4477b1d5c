"""Task `distill`: train the `model=` student on its labels and on a frozen teacher's scores.

    python run.py task=distill "teacher.models=[<run>/checkpoints/best.ckpt]" model=melcnn

The teacher is one project checkpoint (`teacher.models`), read with its own front end:
the DataModule caches the training recordings a second time with it and every training
window carries the teacher's features of the same span (`teacher_features`). Training,
checkpoints, evaluation and `metrics.json` are those of `birdclef.tasks.train.run`, with a
`birdclef.modules.distill.Distiller` as the module; the student's checkpoint is a plain
`Classifier` checkpoint. `metrics.json` adds `distill/teacher` (the checkpoint's path),
`distill/temperature`, `distill/kd_weight` and `distill/teacher_soundscape_auc` (the test
soundscape AUC the teacher's own run recorded, NaN when unknown), for comparison.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from birdclef.errors import ConfigError
from birdclef.modules.classifier import Classifier
from birdclef.modules.distill import Distiller
from birdclef.tasks.train import run as train

log = logging.getLogger(__name__)

MIXING = ("mixup_p", "background_p")  # augmentations the teacher's features would not follow


def teacher_path(cfg: DictConfig) -> Path:
    """The one teacher checkpoint of `teacher.models`, checked."""
    models = list(cfg.teacher.models or [])
    if len(models) != 1:
        raise ConfigError(
            f"task=distill takes exactly one teacher, teacher.models has {len(models)}: give "
            '"teacher.models=[<run>/checkpoints/best.ckpt]" (blended teachers are not supported yet).'
        )
    path = Path(models[0])
    if path.suffix != ".ckpt":
        raise ConfigError(
            f"teacher.models=[{path}]: task=distill needs a project .ckpt (it reads the teacher's "
            "logits and front end); exported .onnx or OpenVINO models cannot teach."
        )
    if not path.is_file():
        raise ConfigError(f"teacher.models=[{path}] not found; give a run's checkpoints/best.ckpt.")
    return path


def load_teacher(path: Path) -> tuple[Classifier, object]:
    """The frozen teacher and its front end (as its checkpoint records it)."""
    teacher = Classifier.from_checkpoint(path).requires_grad_(False)
    if teacher.hparams.get("frontend") is None:
        raise ConfigError(f"teacher {path} does not record its front end; retrain it.")
    return teacher, instantiate(teacher.hparams["frontend"])


def recorded_auc(path: Path) -> float:
    """The teacher run's `test/soundscape_auc` from its metrics.json, NaN when absent."""
    metrics = path.parent.parent / "metrics.json"
    try:
        return float(json.loads(metrics.read_text())["test/soundscape_auc"])
    except (OSError, KeyError, ValueError):
        return math.nan


def run(cfg: DictConfig) -> dict:
    """Distil `teacher.models[0]` into the `model=` student; the metrics of `birdclef.tasks.train.run`."""
    path = teacher_path(cfg)
    augment = cfg.augment
    mixing = [k for k in MIXING if float(augment.get(k) or 0.0) > 0]
    if mixing:
        raise ConfigError(
            f"augment {', '.join(f'{k}={augment[k]}' for k in mixing)} mixes windows the teacher "
            "does not see mixed; distil with augment=none or augment=specaugment."
        )
    teacher, teacher_frontend = load_teacher(path)
    t = cfg.teacher
    log.info("distilling %s (%s) at T=%g, kd_weight=%g", path, teacher.hparams["net"]["_target_"],
             t.temperature, t.kd_weight)  # fmt: skip
    factory = functools.partial(
        Distiller, teacher=teacher, temperature=float(t.temperature), kd_weight=float(t.kd_weight)
    )
    extra = {
        "distill/teacher": str(path),
        "distill/teacher_soundscape_auc": recorded_auc(path),
        "distill/temperature": float(t.temperature),
        "distill/kd_weight": float(t.kd_weight),
    }
    return train(
        cfg, module_factory=factory, teacher_frontend=teacher_frontend, extra_metrics=extra
    )
