"""Task `distill`: train the `model=` student on its labels and on frozen teachers' scores.

    python run.py task=distill "teacher.models=[<run>/checkpoints/best.ckpt]" model=melcnn
    python run.py task=distill "teacher.models=[<export>/model_fp32.onnx,<export>/openvino]"

The teachers (`teacher.models`; several: the mean of their scores) are project checkpoints
or log-mel models exported by `task=export` (.onnx files, OpenVINO folders;
`birdclef.modules.exported_teacher`: they run on the CPU, `teacher.threads` threads each,
and take only the window length they were exported with). They share one front end (equal
`params()`): the DataModule caches the training recordings a second time with it and
every training window carries the teachers' features of the same span
(`teacher_features`). Models of other projects (Perch, ...) cannot teach here: they teach
through `task=pseudo_label` and `data.pseudo.labels`.

With `teacher.cross_fit=true` each teacher's run's split.csv says which recordings it
trained on, and a window is taught only by the teachers that did not (K teachers trained
with `data.split.folds=K data.split.fold=k`). A checkpoint's split.csv is in its run folder; an
exported model's is beside it (in the folder holding the .onnx file or the openvino
folder, where it can be copied), else in the run folder of the checkpoint it was exported
from (the `source` its export records); without one, cross-fitting refuses the model.

Training, checkpoints, evaluation and `metrics.json` are those of
`birdclef.tasks.train.run`, with a `birdclef.modules.distill.Distiller` as the module;
the student's checkpoint is a plain `Classifier` checkpoint. `metrics.json` adds
`distill/teacher` (the teachers' paths, comma-separated), `distill/teachers`,
`distill/cross_fit`, `distill/temperature`, `distill/kd_weight` and
`distill/teacher_soundscape_auc` (the mean of the test soundscape AUCs the teachers' own
runs recorded, an exported model's being its source checkpoint's run; NaN when one is
unknown), for comparison.
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

from birdclef.core.errors import ConfigError
from birdclef.data.datasets import teacher_window
from birdclef.data.root import data_root
from birdclef.data.teacher_inputs import TeacherInputs
from birdclef.inference.foreign import is_saved_model
from birdclef.modules.classifier import Classifier
from birdclef.modules.distill import Distiller
from birdclef.modules.exported_teacher import ExportedTeacher, is_exported
from birdclef.modules.exported_teacher import run_folders as exported_run_folders
from birdclef.runs.envelope import task
from birdclef.tasks.train import train

log = logging.getLogger(__name__)

MIXING = ("mixup_p", "background_p")  # augmentations the teacher's features would not follow
SPLIT = "split.csv"  # a run's split: which recordings it trained on
MIXTURE_SOURCES = "train_mixture_sources.csv"  # task=mix_train: what each row mixes


def teacher_paths(cfg: DictConfig) -> list[Path]:
    """The teachers of `teacher.models`, checked: .ckpt files and exported models."""
    models = [Path(m) for m in cfg.teacher.models or []]
    if not models:
        raise ConfigError(
            'task=distill needs a teacher: give "teacher.models=[<run>/checkpoints/best.ckpt]" '
            "(several models: the mean of their scores)."
        )
    for path in models:
        if not path.exists():
            raise ConfigError(
                f"teacher.models=[{path}] not found; give a run's checkpoints/best.ckpt, or the "
                "model_fp32.onnx or openvino folder task=export wrote."
            )
        if path.suffix == ".json" or is_saved_model(path):
            raise ConfigError(
                f"teacher.models=[{path}] is a model of another project (Perch, ...): it cannot "
                "teach task=distill, which reads the teacher's front end; it teaches through "
                "task=pseudo_label (teacher.foreign) and data.pseudo.labels."
            )
        if not (path.suffix == ".ckpt" and path.is_file()) and not is_exported(path):
            raise ConfigError(
                f"teacher.models=[{path}] is not a model task=distill can use: give a project "
                ".ckpt, an .onnx file or an OpenVINO folder written by task=export."
            )
    return models


def load_teachers(paths: list[Path], threads: int = 1) -> tuple[list, object]:
    """The frozen teachers and their one front end (checkpoints: as recorded; exported models:
    see `birdclef.modules.exported_teacher`); exported ones run on `threads` threads."""
    teachers, frontends = [], []
    for path in paths:
        if is_exported(path):
            teacher = ExportedTeacher.load(path, threads)
            frontends.append(teacher.frontend())
        else:
            teacher = Classifier.from_checkpoint(path).requires_grad_(False)
            if teacher.hparams.get("frontend") is None:
                raise ConfigError(f"teacher {path} does not record its front end; retrain it.")
            frontends.append(instantiate(teacher.hparams["frontend"]))
        teachers.append(teacher)
    first = frontends[0].params()
    for path, frontend in zip(paths, frontends, strict=True):
        params = frontend.params()
        if params != first:
            differ = sorted(
                k for k in first.keys() | params.keys() if first.get(k) != params.get(k)
            )
            raise ConfigError(
                f"teachers {paths[0]} and {path} read different front ends ({first.get('kind')} "
                f"and {params.get('kind')}, differing in {', '.join(differ)}): distil from "
                "teachers that share one (e.g. BirdNET heads)."
            )
    return teachers, frontends[0]


def check_window(cfg: DictConfig, paths: list[Path], teachers: list, frontend) -> None:
    """Refuse student windows that are not an exported teacher's window (it takes only its own)."""
    exported = [(p, t) for p, t in zip(paths, teachers, strict=True) if is_exported(p)]
    if not exported:
        return
    student = instantiate(cfg.frontend)
    n = int(round(float(cfg.data.windows.seconds) * student.sample_rate)) // student.hop_length
    given = teacher_window(n, student, frontend)
    for path, teacher in exported:
        if given != teacher.window_frames:
            seconds = teacher.window_frames * frontend.hop_length / frontend.sample_rate
            raise ConfigError(
                f"teacher {path} takes windows of {teacher.window_frames} frames ({seconds:g} s) "
                f"and the student's windows (window_seconds={cfg.window_seconds}) give "
                f"it {given}: distil with window_seconds={seconds:g}, or from the model's .ckpt."
            )


def run_folders(path: Path) -> list[Path]:
    """Where a teacher's run files (split.csv, metrics.json) are, in the order looked in: a
    checkpoint's run folder; for an exported model see `exported_teacher.run_folders`."""
    return exported_run_folders(path) if is_exported(path) else [path.parent.parent]


def trained_on(path: Path) -> set[str]:
    """The recordings the teacher's run trained on (`split == "train"` in its split.csv)."""
    folders = run_folders(path)
    split = next((f / SPLIT for f in folders if (f / SPLIT).is_file()), folders[0] / SPLIT)
    try:
        rows = pd.read_csv(split)
        return set(rows.loc[rows["split"] == "train", "filename"])
    except (OSError, KeyError, pd.errors.ParserError) as err:
        where = " or ".join(str(f / SPLIT) for f in folders)
        raise ConfigError(
            f"teacher.cross_fit=true needs each teacher's split.csv ({where}: {err}); give "
            "checkpoints inside their run folders, or copy the run's split.csv beside an "
            "exported model."
        ) from err


def mixture_sources(cfg: DictConfig) -> dict[str, set[str]]:
    """The data root's mixed train_soundscapes: stem -> the recordings mixed into it (from the
    `train_mixture_sources.csv` task=mix_train writes; empty without one)."""
    path = data_root(cfg) / MIXTURE_SOURCES
    if not path.is_file():
        return {}
    plan = pd.read_csv(path, dtype=str)
    plan = plan[plan["source_row_id"].notna()]
    files = plan["source_row_id"].str.rsplit("@", n=1).str[0]
    return {stem: set(part) for stem, part in files.groupby(plan["stem"])}


def recorded_auc(path: Path) -> float:
    """The teacher run's `test/soundscape_auc` from its metrics.json, NaN when absent (an
    exported model: the run of the checkpoint it was exported from)."""
    metrics = run_folders(path)[-1] / "metrics.json"
    try:
        return float(json.loads(metrics.read_text())["test/soundscape_auc"])
    except (OSError, KeyError, ValueError):
        return math.nan


def check_augment(cfg: DictConfig) -> None:
    """Refuse augmentations that mix windows: the teacher scores each window unmixed."""
    augment = cfg.augment
    mixing = [k for k in MIXING if float(augment.get(k) or 0.0) > 0]
    if mixing:
        raise ConfigError(
            f"augment {', '.join(f'{k}={augment[k]}' for k in mixing)} mixes windows the teacher "
            "does not see mixed; distil with augment=none or augment=specaugment (the default "
            "augment=mixup is for training alone)."
        )


@task
def run(cfg: DictConfig, extra_metrics: dict | None = None) -> dict:
    """Distil `teacher.models` into the `model=` student; the metrics of `birdclef.tasks.train.run`."""
    paths = teacher_paths(cfg)
    check_augment(cfg)
    t = cfg.teacher
    teachers, teacher_frontend = load_teachers(paths, int(t.get("threads") or 1))
    check_window(cfg, paths, teachers, teacher_frontend)
    cross_fit = bool(t.get("cross_fit", False))
    seen = [trained_on(p) for p in paths] if cross_fit else None
    sources = mixture_sources(cfg) if cross_fit else None
    log.info("distilling %d teacher(s) %s (%s) at T=%g, kd_weight=%g%s", len(paths),
             ", ".join(map(str, paths)), teacher_frontend.params().get("kind"), t.temperature,
             t.kd_weight, ", cross-fitted" if cross_fit else "")  # fmt: skip
    factory = functools.partial(
        Distiller, teacher=teachers, temperature=float(t.temperature), kd_weight=float(t.kd_weight)
    )
    extra = {
        **(extra_metrics or {}),
        "distill/teacher": ",".join(map(str, paths)),
        "distill/teachers": float(len(paths)),
        "distill/cross_fit": float(cross_fit),
        "distill/teacher_soundscape_auc": float(np.mean([recorded_auc(p) for p in paths])),
        "distill/temperature": float(t.temperature),
        "distill/kd_weight": float(t.kd_weight),
    }
    return train(
        cfg, module_factory=factory, teacher=TeacherInputs(teacher_frontend, seen, sources),
        extra_metrics=extra,
    )  # fmt: skip
