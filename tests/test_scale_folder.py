"""task=scale_folder: a competition-shaped folder of links, its class spread, resume."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.metadata import load_metadata
from birdclef.tasks import scale_folder
from tests.conftest import compose_cfg

COLUMNS = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
           "latitude", "longitude", "scientific_name", "common_name", "author", "license"]  # fmt: skip


def test_class_counts_fall_from_the_largest_to_one_and_sum_to_the_total():
    counts = scale_folder.class_counts(206, 28000, 990)
    assert counts.sum() == 28000 and counts.max() <= 990 and counts.min() == 1
    assert (counts <= 2).sum() >= 10 and 10 <= np.median(counts) <= 100  # a long tail
    assert (np.diff(counts) <= 1).all()  # by rank, but for the remainder handed out
    with pytest.raises(ConfigError, match="task.recordings=100 must lie between"):
        scale_folder.class_counts(206, 100, 990)


def test_scale_folder_links_every_recording_and_resumes(tiny_root, tmp_path):
    out = tmp_path / "scale"
    overrides = ("task=scale_folder", f"task.source={tiny_root}", f"task.output={out}",
                 "task.recordings=300", "task.classes=20", "task.max_per_class=100",
                 "task.soundscapes=7", "task.minute_files=2")  # fmt: skip
    metrics = scale_folder.run(compose_cfg(*overrides, tmp=tmp_path / "run"))
    train = pd.read_csv(out / "train.csv", dtype=str)
    assert list(train.columns) == COLUMNS and len(train) == 300
    meta = load_metadata(out)  # reads as any competition folder: labels as strings
    assert len(meta.classes) == 20 and set(train["primary_label"]) <= set(meta.classes)
    assert any(label.isdigit() for label in meta.classes)  # iNaturalist-like ids of other taxa
    first = out / "train_audio" / train["filename"].iloc[0]
    source = {os.stat(p).st_ino for p in (tiny_root / "train_audio").rglob("*") if p.is_file()}
    assert os.stat(first).st_ino in source  # a hard link: no audio copied
    assert len(list((out / "train_soundscapes").glob("*.ogg"))) == 7
    assert metrics["scale/recordings"] == 300 and metrics["scale/train_audio_hours"] > 0
    assert set(train["collection"]) <= {"XC", "iNat", "CSA"}
    assert (train.loc[train["collection"] != "XC", "rating"].astype(float) == 0).all()

    (out / "scale.json").unlink()  # a build killed before its summary: the rerun resumes
    first.unlink()
    again = scale_folder.run(compose_cfg(*overrides, tmp=tmp_path / "run2"))
    assert first.is_file() and again == metrics
    assert pd.read_csv(out / "train.csv", dtype=str).equals(train)  # the same seeded folder
