"""task=student: fold heads, mixtures and pseudo-labels from the student's own training recordings only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from birdclef.tasks import student
from tests.conftest import compose_cfg

pytest.importorskip("ai_edge_litert")  # the BirdNET heads need the birdnet extra

QUICK = ('task.base=["trainer.max_epochs=1","data.cache.workers=0","data.loader.batch_size=16"]',
         "task.inner_folds=2", "task.soundscapes=1", "data.split.min_val_recordings=2")  # fmt: skip


def student_cfg(root, tmp_path, *overrides):
    return compose_cfg(
        "experiment=birdnet_student", f"data.root={root}", *QUICK, *overrides, tmp=tmp_path
    )


def split_of(folder):
    split = pd.read_csv(folder / "split.csv", dtype=str)
    return set(split.loc[split["split"] == "train", "filename"]), set(
        split.loc[split["split"] == "val", "filename"]
    )


@pytest.mark.slow
def test_nothing_of_the_students_validation_or_test_reaches_a_teacher(tiny_root, tmp_path):
    cfg = student_cfg(tiny_root, tmp_path)
    metrics = student.run(cfg)
    out = tmp_path / "out"
    work = out / "student_work"
    trains, vals = split_of(out)  # the student's own split, as evaluate reads it
    assert set(pd.read_csv(work / "teachers_root" / "train.csv")["filename"]) == trains
    assert not (work / "teachers_root" / "test_soundscapes").exists()
    for i in range(2):
        head_train, head_val = split_of(work / f"head_{i}")
        assert head_train | head_val == trains and not head_train & head_val
        sources = pd.read_csv(work / f"mix_{i}" / "train_mixture_sources.csv").dropna(
            subset=["source_row_id"]
        )
        mixed = set(sources["source_row_id"].str.rsplit("@", n=1).str[0])
        assert mixed <= head_val  # mixed from the fold the head did not train on ...
        assert not mixed & vals  # ... never from the student's validation recordings
        taught = json.loads((work / f"pseudo_{i}" / "teacher.json").read_text())["models"]
        assert [m["path"] for m in taught] == [
            str(work / f"head_{i}" / "checkpoints" / "best.ckpt")
        ]
    assert split_of(work / "student") == (trains, vals)  # the student holds out what this run does
    assert metrics["distill/cross_fit"] == 1.0 and (out / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_the_controls_train_the_same_student_and_a_rerun_skips_every_step(tiny_root, tmp_path):
    truth = student.run(student_cfg(tiny_root, tmp_path / "truth", "task.mode=truth"))
    work = tmp_path / "truth" / "out" / "student_work"
    labels = pd.read_csv(work / "student_root" / "train_soundscapes_truth.csv")
    assert set(labels.drop(columns="row_id").stack().unique()) <= {0, 1}
    assert "distill/cross_fit" not in truth and not (work / "pseudo_0").exists()
    stamp = (work / "head_0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    student.run(student_cfg(tiny_root, tmp_path / "truth", "task.mode=truth"))
    assert (work / "head_0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == stamp
    alone = student.run(student_cfg(tiny_root, tmp_path / "alone", "task.mode=alone"))
    assert not (tmp_path / "alone" / "out" / "student_work" / "head_0").exists()
    assert (
        tmp_path / "alone" / "out" / "checkpoints" / "best.ckpt"
    ).is_file() and "val/auc" in alone


def test_a_bad_mode_is_one_clear_error(tiny_root, tmp_path):
    with pytest.raises(Exception, match="task.mode='twice' must be one of"):
        student.run(student_cfg(tiny_root, tmp_path, "task.mode=twice"))
