"""task=scale_folder: a competition-shaped folder of links, its class spread, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow
def test_the_scale_pages_scripts_run_end_to_end_on_the_synthetic_set(tmp_path):
    """benchmarks/gpu_profile.py (here on the CPU) and loader_speed.py write their tables."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    env = {**os.environ, "BIRDCLEF_CPUS": "2"}
    profile = subprocess.run(
        [sys.executable, str(bench / "gpu_profile.py"), "--steps", "2", "--batch-size", "4",
         "--workers", "0", "--repeats", "1", "--models", "efficientnet",
         "--work", str(tmp_path / "runs"), "--out", str(tmp_path / "profile")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert profile.returncode == 0, profile.stdout[-2000:] + profile.stderr[-2000:]
    row = next(line for line in (tmp_path / "profile.md").read_text().splitlines()
               if line.startswith("| efficientnet"))  # fmt: skip
    steps_per_s, windows_per_s, waiting = [c.strip() for c in row.strip("|").split("|")][2:]
    assert float(steps_per_s) > 0 and float(windows_per_s.replace(",", "")) > 0
    assert 0.0 <= float(waiting.rstrip(" %")) < 100.0
    loader = subprocess.run(
        [sys.executable, str(bench / "loader_speed.py"), "--batches", "5", "--workers", "0", "1",
         "--repeats", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "loader")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert loader.returncode == 0, loader.stdout[-2000:] + loader.stderr[-2000:]
    rows = [line for line in (tmp_path / "loader.md").read_text().splitlines()
            if line.startswith("| 0 workers") or line.startswith("| 1 workers")]  # fmt: skip
    assert len(rows) == 2
    assert all(float(r.split("|")[2].replace(",", "")) > 0 for r in rows)
