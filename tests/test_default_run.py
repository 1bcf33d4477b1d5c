"""The README's main job: `python run.py` with no arguments on the built-in data (slow)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_default_run_beats_chance_on_synthetic_soundscapes(tmp_path):
    done = subprocess.run(
        [sys.executable, "run.py", f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/auc"] > 0.85
    assert metrics["test/soundscape_auc"] > 0.65  # chance is 0.5
    assert "run summary" in done.stdout
