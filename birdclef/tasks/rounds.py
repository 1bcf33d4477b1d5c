"""Task `rounds`: a supervised model, then k pseudo-label rounds, each student the next teacher.

    python run.py task=rounds task.k=2 data.pseudo.power=2 [any training override]

Round 0 trains as the config says (`task=train`; data.pseudo.labels as given, null =
supervised). Round r >= 1: round r-1's best checkpoint, blended with `teacher.models` when
there are any (e.g. a foreign model), pseudo-labels train_soundscapes (`task=pseudo_label`
with the `teacher` settings), then a student trains as round 0 does but with those labels
(`data.pseudo.*`); with `task.distill=true` that student is distilled from round r-1's
checkpoint too (`task=distill`: online teacher scores on every window, the `teacher`
temperature and kd_weight, beside the labels). Each step is `birdclef.tasks.train.run`
(or `birdclef.tasks.distill.run`) or `birdclef.tasks.pseudo_label.run`
called with a copy of the config (task.fn, paths.output_dir and the labels changed, the
`rounds` group left out, so raising k keeps the finished rounds). The task's folder:

    round_0/train/                the supervised run (checkpoints/, config.yaml, metrics.json, ...)
    round_<r>/pseudo_label/       the pseudo_label job of round r (config.yaml, metrics.json)
    round_<r>/pseudo_label/<key>/ its labels: pseudo_labels.csv, teacher.json, files/
    round_<r>/train/              the student of round r, trained on those labels
    rounds.csv, metrics.json      one row per round: lineage and scores

Lineage: every round's train metrics.json holds `round/index`, `round/teacher` (the
checkpoint(s) that made its labels), `round/pseudo_labels` (the csv), `round/teacher_key`
and `round/pseudo_auc` (the labels' macro AUC against the hidden truth, NaN without it).

Resumable: a step whose folder holds a metrics.json of the same config is skipped (rerun
with the same folder, `hydra.run.dir=<it>`; `rerun=true` runs every step again). The labels'
folder is named by the teacher key, which hashes the teacher checkpoint's size and mtime, so
labels of a retrained teacher never mix with older ones and every later step runs again. An
unfinished pseudo_label step resumes file by file; an unfinished training restarts from a
cleared folder.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from birdclef.core.errors import ConfigError
from birdclef.core.io import write_csv
from birdclef.data.pseudo_store import LABELS
from birdclef.runs.envelope import run_dir, task
from birdclef.runs.jobs import METRICS, finished_metrics
from birdclef.tasks import distill as distill_task
from birdclef.tasks import pseudo_label
from birdclef.tasks import train as train_task

log = logging.getLogger(__name__)

TRAIN, PSEUDO = "train", "pseudo_label"  # a round's step folders
TRAIN_FN, PSEUDO_FN = "birdclef.tasks.train.run", "birdclef.tasks.pseudo_label.run"
DISTILL_FN = "birdclef.tasks.distill.run"
BEST = Path("checkpoints") / "best.ckpt"
COLUMNS = (
    "round", "teacher", "teacher_key", "pseudo_labels", "pseudo/auc", "pseudo/rows",
    "val/auc", "test/soundscape_auc", "train/epochs", "folder",
)  # fmt: skip


@task
def run(cfg: DictConfig) -> dict:
    """Rounds 0..k (see the module docstring); metrics of the last round and a per-round table."""
    k = check(cfg)
    distilled = bool(cfg.task.get("distill", False))
    if distilled:  # before round 0 trains, not when round 1 starts
        distill_task.check_augment(cfg)
    out = run_dir(cfg)
    table, teacher = [], None
    for r in range(k + 1):
        folder = out / f"round_{r}"
        lineage: dict = {"round/index": r}
        labels = None
        if r > 0:
            job, planned = pseudo_config(cfg, teacher, folder / PSEUDO)
            log.info("round %d/%d: pseudo-labels by %s", r, k, list(job.teacher.models))
            made = step(job, functools.partial(pseudo_label.run, planned=planned), clear=False)
            labels = Path(job.teacher.output) / LABELS
            lineage.update({
                "round/teacher": [str(m) for m in job.teacher.models],
                "round/teacher_key": Path(job.teacher.output).name,
                "round/pseudo_labels": str(labels),
                "round/pseudo_auc": float(made.get("pseudo/auc", math.nan)),
                "round/pseudo_rows": float(made.get("pseudo/rows", math.nan)),
            })  # fmt: skip
        log.info("round %d/%d: training %s", r, k, "supervised" if labels is None else "with them")
        updates = {} if labels is None else {"data.pseudo.labels": str(labels)}
        fn, task = TRAIN_FN, train_task.run
        if labels is not None and distilled:  # the teacher also scores every window online
            updates["teacher.models"] = [str(teacher)]
            fn, task = DISTILL_FN, distill_task.run
        fit = functools.partial(task, extra_metrics=lineage)
        metrics = step(derive(cfg, fn, folder / TRAIN, updates), fit, clear=True)
        teacher = folder / TRAIN / BEST
        table.append(row(lineage, metrics, folder / TRAIN))
    summary = pd.DataFrame(table, columns=list(COLUMNS))
    write_csv(out / "rounds.csv", summary)
    last = table[-1]
    metrics = {
        "rounds/k": k,
        "val/auc": last["val/auc"],
        "test/soundscape_auc": last["test/soundscape_auc"],
        "rounds/supervised_test_auc": table[0]["test/soundscape_auc"],
        "rounds": table,
    }
    log.info("rounds (%s):\n%s", out, summary.drop(columns=["folder", "pseudo_labels"]).to_string())
    return metrics


def check(cfg: DictConfig) -> int:
    k = cfg.task.k
    if not isinstance(k, int) or k < 0:
        raise ConfigError(
            f"task.k={k!r} must be an integer >= 0 (pseudo-label rounds after round 0)."
        )
    if cfg.ckpt_path:
        raise ConfigError(
            "task=rounds resumes by itself: drop ckpt_path and rerun with the same folder "
            "(hydra.run.dir=<the rounds run>)."
        )
    if int(cfg.teacher.shards) != 1:
        raise ConfigError("task=rounds labels with one job: set teacher.shards=1.")
    return k


def derive(cfg: DictConfig, fn: str, folder: Path, updates: dict | None = None) -> DictConfig:
    """A copy of `cfg` that runs task `fn` in `folder`, with `updates` (dotted keys); `cfg` is untouched."""
    new = copy.deepcopy(cfg)
    # the step's task has no settings of its own: the rounds' (k, distill) are not the step's,
    # so raising k must not rerun it
    OmegaConf.update(new, "task", {"fn": fn}, merge=False)
    OmegaConf.update(new, "paths.output_dir", str(folder), merge=False)
    for key, value in (updates or {}).items():
        OmegaConf.update(new, key, value, merge=False)
    return new


def pseudo_config(cfg: DictConfig, teacher: Path, folder: Path) -> tuple[DictConfig, dict]:
    """The pseudo_label job of a round: `teacher` (+ teacher.models), labels in folder/<key>.

    Also its `pseudo_label.plan`, made once here (it reads every model, foreign .onnx
    files included) and handed to `pseudo_label.run`.
    """
    if not teacher.is_file():
        raise ConfigError(f"{teacher} is missing: the previous round kept no best checkpoint.")
    models = [str(teacher), *(str(m) for m in cfg.teacher.models or [])]
    updates = {"teacher.models": models, "teacher.shard": 0, "teacher.output": None}
    job = derive(cfg, PSEUDO_FN, folder, updates)
    planned = pseudo_label.plan(job)
    target = folder / planned["key"]
    OmegaConf.update(job, "teacher.output", str(target), merge=False)
    return job, {**planned, "target": target}  # = plan(job) now that teacher.output is set


def step(cfg: DictConfig, fn, clear: bool) -> dict:
    """`fn(cfg)`, or the stored metrics when its folder already finished this same config."""
    folder = Path(cfg.paths.output_dir)
    stored = finished_metrics(cfg, folder)
    if stored is not None:
        log.info("%s already finished with this config: skipped", folder)
        return stored
    if clear and folder.exists():  # a half-trained run's checkpoints must not be taken as its own
        shutil.rmtree(folder)
    (folder / METRICS).unlink(missing_ok=True)
    return fn(cfg)


def row(lineage: dict, metrics: dict, folder: Path) -> dict:
    nan = math.nan
    return {
        "round": lineage["round/index"],
        "teacher": ";".join(lineage.get("round/teacher", [])),
        "teacher_key": lineage.get("round/teacher_key", ""),
        "pseudo_labels": lineage.get("round/pseudo_labels", ""),
        "pseudo/auc": lineage.get("round/pseudo_auc", nan),
        "pseudo/rows": lineage.get("round/pseudo_rows", nan),
        "val/auc": float(metrics.get("val/auc", nan)),
        "test/soundscape_auc": float(metrics.get("test/soundscape_auc", nan)),
        "train/epochs": float(metrics.get("train/epochs", nan)),
        "folder": str(folder),
    }
