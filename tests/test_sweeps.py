"""A sweep fills a results table: Hydra multirun (basic and submitit launchers) + birdclef.report."""

import json
import subprocess
import sys

import pytest

from birdclef.errors import DataError
from birdclef.report import collect, main, table
from tests.conftest import ROOT

FAST = ("data.cache_workers=0", "data.min_val_recordings=2", "trainer.max_epochs=1")


def fake_run(folder, overrides, metrics):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_table(tmp_path):
    fake_run(
        tmp_path / "0",
        ["model=melcnn", "paths.data_dir=/x"],
        {"test/soundscape_auc": 0.71, "model/params": 2.5e6},
    )
    fake_run(tmp_path / "1", ["model=sed"], {"test/soundscape_auc": 0.83, "val/auc": 0.9})
    runs, common = collect([tmp_path])
    assert common == []
    text = table(runs, sort="test/soundscape_auc")
    lines = text.splitlines()
    assert lines[2].startswith("| model=sed | 0.830 | 0.900 |")
    assert lines[3].startswith("| model=melcnn | 0.710 |")  # paths.* overrides are hidden
    assert "| 2.50 |" in lines[3]
    out = tmp_path / "table.md"
    assert main([str(tmp_path), "--out", str(out)]) + "\n" == out.read_text()
    with pytest.raises(DataError, match="no metrics.json"):
        collect([tmp_path / "empty"])


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_multirun_sweep_then_report(launcher, tiny_root, tmp_path):
    extra = ["cluster=local"] if launcher == "submitit_local" else []
    args = ["-m", *extra, f"data.root={tiny_root}", *FAST, "model.channels=[8],[8,16]",
            f"paths.data_dir={tmp_path}/data", f"hydra.sweep.dir={tmp_path}/sweep"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs, common = collect([tmp_path / "sweep"])
    assert sorted(name for name, _ in runs) == ["model.channels=[8,16]", "model.channels=[8]"]
    assert "trainer.max_epochs=1" in common
    assert all(0 <= m["test/soundscape_auc"] <= 1 for _, m in runs)
