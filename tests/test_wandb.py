"""Run logging: W&B group and tags from Hydra, the per-class table, confused pairs, offline runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from birdclef.analysis.runlog import confused_pairs, per_class_auc, run_group, run_tags
from tests.conftest import fast_cfg

CLASSES = ["a", "b", "c"]


def test_group_is_the_sweep_name():
    assert run_group("run", "architecture", "multirun/2026-11-27/10-00-00", True) == "architecture"
    assert run_group("run", "config", "multirun/2026-11-27/10-00-00", True) == "2026-11-27/10-00-00"
    assert run_group("loss_study", "config", "multirun/x/y", True) == "loss_study"
    assert run_group("run", "config", "outputs/x", False) is None


def test_tags_are_the_overrides_less_paths_and_hydra():
    overrides = ["model=cnn", "loss=focal,bce", "paths.data_dir=/d", "hydra.job.name=x",
                 "+data.cache.workers=2", "data.root=" + "x" * 80]  # fmt: skip
    assert run_tags(overrides) == ["model=cnn", "loss=focal,bce", ("data.root=" + "x" * 80)[:64]]


def test_per_class_auc_rows_match_sklearn():
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], float)
    scores = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.5], [0.4, 0.1, 0.2], [0.5, 0.3, 0.3]])
    table = per_class_auc(truth, scores, CLASSES)
    assert table["class"].tolist() == CLASSES
    assert table["positives"].tolist() == [2, 2, 0] and set(table["rows"]) == {4}
    assert table["auc"][0] == pytest.approx(roc_auc_score(truth[:, 0], scores[:, 0]))  # 0.75
    assert table["auc"][1] == pytest.approx(0.5) and np.isnan(table["auc"][2])


def test_confused_pairs_count_wrong_top_classes():
    truth = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], float)
    scores = np.array([[0.1, 0.9, 0], [0.2, 0.1, 0.7], [0, 0.9, 0], [0, 0, 1], [1, 0, 0]])
    pairs, top1 = confused_pairs(truth, scores, CLASSES)
    assert pairs.values.tolist() == [["a", "c", 2], ["a", "b", 1], ["b", "c", 1]]
    assert top1 == pytest.approx(1 / 4)  # row 4 has no true class and is not counted


def test_csv_runs_leave_the_tables_and_figures(tiny_checkpoint, tiny_root):
    """The shared tiny training run (logger=csv) wrote the tables and PNGs into its folder."""
    out = tiny_checkpoint.parents[1]
    table = pd.read_csv(out / "per_class_auc.csv")
    classes = pd.read_csv(tiny_root / "taxonomy.csv")["primary_label"].tolist()
    assert sorted(table["class"]) == sorted(classes)
    assert set(table["rows"]) == {len(pd.read_csv(out / "soundscape_predictions.csv"))}
    for name in ("per_class_auc", "test_windows"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5_000


def test_offline_wandb_run(tiny_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from birdclef.tasks.train import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = fast_cfg(tiny_root, "logger=wandb", "logger.tags=[smoke]", tmp=tmp_path)
    run(cfg)
    out = tmp_path / "out"
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    table = pd.read_csv(out / "per_class_auc.csv")
    assert len(table) == 6 and (out / "figures" / "test_windows.png").is_file()
