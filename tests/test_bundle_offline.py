"""The bundle as a Kaggle notebook meets it: installed offline from its own wheels/ into a clean
venv without birdclef, torch, Lightning or Hydra, run on an empty folder (the save run) and on
real soundscapes (the same rows and scores as task=predict)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.tasks.bundle import run as bundle
from birdclef.tasks.export import run as export
from birdclef.tasks.predict import run as predict
from tests.conftest import compose_cfg

ABSENT = ("birdclef", "torch", "lightning", "hydra", "omegaconf", "scipy", "onnx")


def clean_env() -> dict:
    """This process's environment without what would let the venv see the project."""
    import os

    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def clean_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


@pytest.mark.slow
def test_offline_install_runs_the_save_run_and_matches_predict(
    tiny_root, tiny_checkpoint, tmp_path
):
    export(compose_cfg(
        "task=export", f"data.root={tiny_root}", f"task.model={tiny_checkpoint}", "task.int8=false",
        "task.openvino=false", "task.check_windows=4", f"task.output={tmp_path / 'exp'}",
        tmp=tmp_path / "export",
    ))  # fmt: skip
    model = tmp_path / "exp" / "model_fp32.onnx"
    folder = tmp_path / "bundle"
    metrics = bundle(compose_cfg(
        "task=bundle", f"data.root={tiny_root}", f"predict.models=[{model}]", "task.workers=1",
        "task.extras=[]",  # the minimum: runs without scipy
        f"task.output={folder}", f"task.python={sys.version_info.major}.{sys.version_info.minor}",
        tmp=tmp_path / "bundle_run",
    ))  # fmt: skip
    wheels = sorted(p.name for p in (folder / "wheels").glob("*.whl"))
    names = {w.split("-")[0].lower() for w in wheels}
    assert {"numpy", "pandas", "soundfile", "onnxruntime"} <= names and not names & {
        "onnx",
        "scipy",
        "torch",
    }
    assert "!pip install --no-index --find-links" in (folder / "README.md").read_text()

    python = clean_venv(tmp_path / "venv")
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
               str(folder / "wheels"), "-r", str(folder / "requirements.txt")]  # fmt: skip
    tic = time.perf_counter()
    done = subprocess.run(
        install, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=clean_env()
    )
    install_seconds = time.perf_counter() - tic
    assert done.returncode == 0, done.stderr[-2000:]
    probe = "; ".join(
        f"__import__('importlib.util').util.find_spec('{m}') is None or print('{m}')"
        for m in ABSENT
    )
    found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=clean_env()
    )
    assert found.returncode == 0 and found.stdout == "", found.stdout + found.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    saved = subprocess.run(
        [str(python), str(folder / "predict.py"), str(empty), "--output", str(tmp_path / "save.csv")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    header = pd.read_csv(tmp_path / "save.csv")
    columns = list(pd.read_csv(tiny_root / "sample_submission.csv", nrows=0).columns)
    assert list(header.columns) == columns and "holds no audio" in saved.stdout

    scored = subprocess.run(
        [str(python), str(folder / "predict.py"), str(tiny_root / "test_soundscapes"),
         "--output", str(tmp_path / "bundle.csv")], capture_output=True, text=True, timeout=600,
        cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    predict(compose_cfg(
        "task=predict", f"data.root={tiny_root}", f"predict.models=[{model}]", "predict.workers=1",
        f"predict.output={tmp_path / 'predict.csv'}", tmp=tmp_path / "predict_run",
    ))  # fmt: skip
    ours, theirs = (
        pd.read_csv(tmp_path / f, dtype={"row_id": str}) for f in ("bundle.csv", "predict.csv")
    )
    assert list(ours["row_id"]) == list(theirs["row_id"])
    np.testing.assert_allclose(ours[columns[1:]], theirs[columns[1:]], atol=1e-5, rtol=0)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "bundle_mb": size / 1e6,
                "wheels": len(wheels),
                "install_s": install_seconds,
                **metrics,
            }
        )
    )
