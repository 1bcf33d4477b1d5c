"""task=bench: timings, projections, blends and the budget pick, on the tiny synthetic set."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from birdclef.tasks import bench
from tests.conftest import compose_cfg


def test_bench_times_models_and_blends_and_picks_within_budget(
    tiny_root, tiny_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setenv("BIRDCLEF_CPUS", "1")  # one setting per model: keeps the test short
    cfg = compose_cfg(
        "task=bench", f"data.root={tiny_root}", f"predict.models=[{tiny_checkpoint},{tiny_checkpoint}]",
        "task.files=2", "task.repeats=2", tmp=tmp_path,
    )  # fmt: skip
    metrics = bench.run(cfg)
    table = pd.read_csv(tmp_path / "out" / "bench.csv")
    assert len(table) == 3  # two models alone, one blend of both
    assert table["models"].tolist() == [1, 1, 2]
    trained = json.loads((tiny_checkpoint.parents[1] / "metrics.json").read_text())
    # the model alone and a rank blend of it with itself rank every row alike
    assert table["val AUC"].to_numpy() == pytest.approx(
        [trained["test/soundscape_auc"]] * 3, abs=1e-4
    )
    assert (table["x real time"] > 0).all()
    # where a file's time goes: every part measured, STFT + mel + windows is the frames time
    parts = ["decode", "stft", "mel", "windows", "model", "rows"]
    assert (table[[f"{p} ms/file" for p in parts]] > 0).all().all()
    frames = table[["stft ms/file", "mel ms/file", "windows ms/file"]].sum(axis=1)
    assert frames.to_numpy() == pytest.approx(table["frames ms/file"].to_numpy())
    expected = 700 * 60 / table["x real time"] / 60
    assert table["projected min"].to_numpy() == pytest.approx(expected.to_numpy())
    assert metrics["bench/best_val_auc"] == pytest.approx(table["val AUC"].max())
    assert "| model | setting |" in (tmp_path / "out" / "bench.md").read_text()


def test_bench_reports_when_nothing_fits(tiny_root, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_CPUS", "1")
    cfg = compose_cfg(
        "task=bench", f"data.root={tiny_root}", f"predict.models=[{tiny_checkpoint}]",
        "task.files=1", "task.repeats=1", "task.budget_minutes=0.0001", tmp=tmp_path,
    )  # fmt: skip
    metrics = bench.run(cfg)
    assert metrics["bench/best"] is None
    assert "No model or blend" in (tmp_path / "out" / "bench.md").read_text()
