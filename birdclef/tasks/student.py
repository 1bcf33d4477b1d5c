"""Task `student`: a small student taught by cross-fitted fold heads, on its own training data only.

    python run.py experiment=birdnet_student [data.root=...]      # BirdNET heads teach a MelCNN

The student's training recordings are those its own split trains on (`data.split`); nothing
of its validation recordings or the test soundscapes enters a teacher, a mixture or a
pseudo-label. On those recordings:

1. `task.inner_folds` heads (`task.head`, e.g. `experiment=birdnet`) train on K-1 inner folds
   each, for a fixed budget with the last epoch kept (`monitor=null`): no head is selected on
   the fold it will score.
2. For each inner fold, `task.soundscapes` unlabelled soundscapes are mixed from that fold's
   recordings alone (`task=mix_train`) and pseudo-labelled by the head that did not train on
   them, so mixtures are cross-fitted like the labelled windows.
3. The student trains on its labelled windows and the mixtures (`data.pseudo`), taught by the
   heads cross-fitted (`task=distill teacher.cross_fit=true`: each window and mixture only by
   heads that never heard it) with `task.mode=distill`; the controls train the same student on
   the same windows and mixtures with `task.mode=truth` (the mixtures' true labels, no
   teacher) or alone with `task.mode=alone` (no mixtures).

Every step is a run folder under `<run folder>/student_work`, skipped when finished with the
same config (resumable). The student's checkpoint and split are copied into the run folder
(`checkpoints/best.ckpt`, `split.csv`), so `task=evaluate` scores it like any recipe.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from birdclef.core.errors import ConfigError
from birdclef.core.io import write_csv
from birdclef.data.folders import copy_files, link_folder, subset_root
from birdclef.data.root import data_root
from birdclef.runs.envelope import run_dir, task
from birdclef.runs.jobs import finished_metrics
from birdclef.runs.recipes import command_line_overrides, compose_run, recipe_overrides
from birdclef.tasks.train import build_datamodule

log = logging.getLogger(__name__)

MODES = ("distill", "truth", "alone")
BEST = "checkpoints/best.ckpt"
LINKED = ("train_audio", "test_soundscapes")
COPIED = ("train.csv", "taxonomy.csv", "sample_submission.csv", "soundscape_labels.csv")


def key_of(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def step(overrides: list[str], folder: Path, inherited: list[str]) -> dict:
    """Run the task the overrides compose in `folder`, unless it finished with that config.

    `inherited` (this run's command-line overrides and `task.base`) come first, less the keys
    the step sets itself.
    """
    own = {key_of(o) for o in overrides} | {"paths.output_dir"}
    kept = [o for o in inherited if key_of(o) not in own]
    cfg = compose_run([*kept, *overrides, f"paths.output_dir={folder}"])
    stored = finished_metrics(cfg, folder)
    if stored is not None:
        return stored
    if (folder / BEST).exists():  # a killed run's checkpoints must not be taken as its own
        shutil.rmtree(folder / "checkpoints")
    return get_method(cfg.task.fn)(cfg)


def training_recordings(cfg: DictConfig) -> list[str]:
    """The recordings the student's own split trains on."""
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm.split.loc[dm.split["split"] == "train", "filename"].tolist()


def held_out(head: Path) -> list[str]:
    split = pd.read_csv(head / "split.csv", dtype=str)
    return split.loc[split["split"] == "val", "filename"].tolist()


def student_root(source: Path, work: Path, mixes: list[Path], labels: list[Path]) -> Path:
    """The student's data root: the source's recordings and test, and every fold's mixtures
    (soundscapes linked, their labels, truths and sources merged)."""
    root = work / "student_root"
    (root / "train_soundscapes").mkdir(parents=True, exist_ok=True)
    copy_files(source, root, COPIED)
    for name in LINKED:
        if (source / name).is_dir():
            link_folder(source, root, name)
    for mix in mixes:
        for audio in sorted((mix / "train_soundscapes").glob("*.ogg")):
            link = root / "train_soundscapes" / audio.name
            if not link.is_symlink():
                os.symlink(os.path.relpath(audio.resolve(), link.parent.resolve()), link)
    for name, parts in (
        ("pseudo_labels.csv", labels),
        ("train_soundscapes_truth.csv", [m / "train_soundscapes_truth.csv" for m in mixes]),
        ("train_mixture_sources.csv", [m / "train_mixture_sources.csv" for m in mixes]),
    ):
        write_csv(root / name, pd.concat([pd.read_csv(p, dtype={"row_id": str}) for p in parts]))
    return root


@task
def run(cfg: DictConfig) -> dict:
    t = cfg.task
    if t.mode not in MODES:
        raise ConfigError(f"task.mode={t.mode!r} must be one of {list(MODES)}.")
    out, source = run_dir(cfg), data_root(cfg)
    work = out / "student_work"
    base = [f"seed={cfg.seed}", f"paths.data_dir={cfg.paths.data_dir}"]
    inherited = [*command_line_overrides(), *recipe_overrides("task.base", t.base)]
    student = recipe_overrides("task.student", t.student)
    if t.mode == "alone":
        final = [*student, f"data.root={source}", *split_overrides(cfg), *base]
        metrics = step(final, work / "student", inherited)
        return publish(work / "student", out, metrics)
    teachers = subset_root(source, training_recordings(cfg), work / "teachers_root")
    heads, mixes, labels = [], [], []
    k = int(t.inner_folds)
    for i in range(k):
        head = work / f"head_{i}"
        step([*recipe_overrides("task.head", t.head), f"data.root={teachers}",
              f"data.split.folds={k}", f"data.split.fold={i}", "monitor=null", "data.test=false",
              *base], head, inherited)  # fmt: skip
        heads.append(head / BEST)
        fold_root = subset_root(source, held_out(head), work / f"fold_{i}_root")
        mix = work / f"mix_{i}"
        step(["task=mix_train", f"task.source={fold_root}", f"task.output={mix}",
              f"task.stem_prefix=f{i}mix", f"task.n_soundscapes={t.soundscapes}", *base],
             work / f"mix_{i}_run", inherited)  # fmt: skip
        mixes.append(mix)
        if t.mode == "distill":
            pseudo = work / f"pseudo_{i}"
            step(["task=pseudo_label", f"data.root={mix}", f"teacher.models=[{heads[-1]}]",
                  f"teacher.output={pseudo}", "teacher.workers=1", *base],
                 work / f"pseudo_{i}_run", inherited)  # fmt: skip
            labels.append(pseudo / "pseudo_labels.csv")
    truth = [m / "train_soundscapes_truth.csv" for m in mixes]
    root = student_root(source, work, mixes, labels or truth)
    given = "pseudo_labels.csv" if t.mode == "distill" else "train_soundscapes_truth.csv"
    final = [*student, f"data.root={root}", f"data.pseudo.labels={root / given}",
             *split_overrides(cfg), *base]  # fmt: skip
    if t.mode == "distill":
        final += ["task=distill", f"teacher.models=[{','.join(map(str, heads))}]",
                  "teacher.cross_fit=true"]  # fmt: skip
    metrics = step(final, work / "student", inherited)
    return publish(work / "student", out, metrics)


def split_overrides(cfg: DictConfig) -> list[str]:
    """The student's own split, so its final run holds out what this run holds out."""
    s = cfg.data.split
    return [
        f"data.split.{k}={v}" for k, v in OmegaConf.to_container(s).items() if v is not None
    ] + [
        "monitor=" + ("null" if cfg.monitor is None else str(cfg.monitor)),
        f"data.test={str(cfg.data.test).lower()}",
    ]


def publish(folder: Path, out: Path, metrics: dict) -> dict:
    """The student's checkpoint and split in this run's folder, where evaluate looks."""
    (out / "checkpoints").mkdir(exist_ok=True)
    for name in ("best.ckpt", "last.ckpt"):
        if (folder / "checkpoints" / name).is_file():
            shutil.copy2(folder / "checkpoints" / name, out / "checkpoints" / name)
    shutil.copy2(folder / "split.csv", out / "split.csv")
    return dict(metrics)
