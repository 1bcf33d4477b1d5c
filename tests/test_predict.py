"""task=predict and task=score end to end on the tiny synthetic set, bad input included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from birdclef.core.errors import ConfigError, InferenceError
from birdclef.inference.runtime import predict_folder
from birdclef.modules.classifier import Classifier
from birdclef.tasks import predict, score
from tests.conftest import ROOT, SR, compose_cfg, tone, write_wav


def _soundscapes(tiny_root, tmp_path):
    """The tiny set's test soundscapes plus a corrupt, an empty and a 3-s file, and a 59.99-s one."""
    folder = tmp_path / "soundscapes"
    shutil.copytree(tiny_root / "test_soundscapes", folder)
    (folder / "corrupt.ogg").write_bytes(b"OggS" + bytes(500))
    write_wav(folder / "empty.wav", np.zeros(0, np.float32))
    write_wav(folder / "short.wav", tone(3.0))
    write_wav(folder / "almost.wav", tone(60 - 0.01))
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_predict_writes_every_row_and_lists_bad_files(tiny_root, tiny_checkpoint, tmp_path):
    folder = _soundscapes(tiny_root, tmp_path)
    out = tmp_path / "sub.csv"
    cfg = compose_cfg(
        "task=predict", f"predict.models=[{tiny_checkpoint}]", f"predict.soundscapes={folder}",
        f"predict.output={out}", f"predict.taxonomy={tiny_root}", "predict.workers=1", tmp=tmp_path,
    )  # fmt: skip
    metrics = predict.run(cfg)
    frame = pd.read_csv(out)
    classes = pd.read_csv(tiny_root / "taxonomy.csv", dtype=str)["primary_label"].tolist()
    assert list(frame.columns) == ["row_id", *classes]
    stems = [p.stem for p in sorted((tiny_root / "test_soundscapes").glob("*.ogg"))]
    rows = dict(frame["row_id"].str.rpartition("_")[0].value_counts())
    assert all(rows[s] == 6 for s in stems)  # 30-s soundscapes
    assert rows["corrupt"] == rows["empty"] == 12  # unknown length: one competition minute
    assert rows["short"] == 1 and rows["almost"] == 12
    assert frame["row_id"].is_unique and np.isfinite(frame[classes].to_numpy()).all()
    assert metrics["predict/bad_files"] == 3  # corrupt, empty (filled) and short (scored)
    report = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    problems = {p["file"].rsplit("/", 1)[-1]: p for p in report["bad_files"]}
    assert set(problems) == {"corrupt.ogg", "empty.wav", "short.wav"}
    assert problems["short.wav"]["rows"] == "scored, padded"
    assert 0 < report["write_seconds"] < report["wall_seconds"]  # the clock counts the CSV
    assert report["realtime_factor"] == pytest.approx(
        report["audio_seconds"] / report["wall_seconds"]
    )
    bad = frame[frame.row_id.str.startswith("corrupt_")][classes].to_numpy()
    good = frame[~frame.row_id.str.startswith(("corrupt_", "empty_"))][classes].to_numpy()
    np.testing.assert_allclose(bad, np.repeat(np.median(good, axis=0)[None], 12, axis=0), rtol=1e-5)


def test_predict_scores_as_training_did_and_workers_agree(tiny_root, tiny_checkpoint, tmp_path):
    cfg = compose_cfg(
        "task=predict", f"data.root={tiny_root}", f"predict.models=[{tiny_checkpoint}]",
        "predict.workers=2", tmp=tmp_path,
    )  # fmt: skip
    metrics = predict.run(cfg)
    trained = json.loads((tiny_checkpoint.parents[1] / "metrics.json").read_text())
    assert metrics["predict/soundscape_auc"] == pytest.approx(
        trained["test/soundscape_auc"], abs=1e-4
    )
    one, _ = predict_folder(
        tiny_root / "test_soundscapes",
        {"models": [str(tiny_checkpoint)], "workers": 1, "taxonomy": str(tiny_root)},
        progress=False,
    )
    two = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert one["row_id"].tolist() == two["row_id"].tolist()
    np.testing.assert_allclose(one.iloc[:, 1:].to_numpy(), two.iloc[:, 1:].to_numpy(), atol=1e-5)
    # task=score on that file gives the same number and a per-class table
    cfg = compose_cfg(
        "task=score", f"data.root={tiny_root}", f"predict.output={tmp_path / 'out' / 'submission.csv'}",
        tmp=tmp_path / "score",
    )  # fmt: skip
    scored = score.run(cfg)
    assert scored["score/auc"] == pytest.approx(metrics["predict/soundscape_auc"], abs=1e-9)
    per_class = pd.read_csv(tmp_path / "score" / "out" / "per_class_auc.csv")
    assert per_class["auc"].dropna().between(0, 1).all() and len(per_class) == 6


def test_blend_of_a_model_with_itself_ranks_like_the_model(tiny_root, tiny_checkpoint):
    settings = {"models": [str(tiny_checkpoint)] * 2, "blend": "rank", "taxonomy": str(tiny_root)}
    blended, _ = predict_folder(tiny_root / "test_soundscapes", settings, progress=False)
    single, _ = predict_folder(
        tiny_root / "test_soundscapes",
        {**settings, "models": settings["models"][:1]},
        progress=False,
    )
    for c in blended.columns[1:]:
        assert (blended[c].rank().to_numpy() == single[c].rank().to_numpy()).all()


def test_bad_predict_input_is_one_clear_error(tiny_root, tiny_checkpoint, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()  # the save run: no audio is no error, the header alone is written
    table, report = predict_folder(empty, {"models": [str(tiny_checkpoint)]}, progress=False)
    assert (
        len(table) == 0
        and list(table.columns[1:]) == Classifier.from_checkpoint(tiny_checkpoint).classes
    )
    assert "holds no audio" in report["note"] and report["files"] == 0
    with pytest.raises(InferenceError, match="is not a folder"):
        predict_folder(tmp_path / "nowhere", {"models": [str(tiny_checkpoint)]}, progress=False)
    with pytest.raises(InferenceError, match="model not found"):
        predict_folder(
            tiny_root / "test_soundscapes", {"models": [str(tmp_path / "x.onnx")]}, progress=False
        )
    other = tmp_path / "other.csv"
    other.write_text("row_id,a,b\n")
    with pytest.raises(InferenceError, match="differ from the 2 submission columns"):
        predict_folder(
            tiny_root / "test_soundscapes",
            {"models": [str(tiny_checkpoint)], "taxonomy": str(other)},
            progress=False,
        )
    cfg = compose_cfg("task=predict", f"data.root={tiny_root}", tmp=tmp_path)
    with pytest.raises(ConfigError, match="predict.models is empty"):
        predict.run(cfg)


def test_cli_predict_error_is_one_line(cfg, run_main, tmp_path):
    """`python run.py task=predict ...` from the project folder, run.py's main in this process."""
    status, output = run_main(
        cfg(
            "task=predict", f"predict.models=[{tmp_path / 'm.ckpt'}]", f"predict.soundscapes={ROOT}"
        )
    )
    assert status == 2
    assert "model not found" in output
    assert "Traceback" not in output
    assert "task:" in (tmp_path / "out" / "config.yaml").read_text()  # every task leaves its config


def test_resampled_and_stereo_audio_are_scored(tiny_checkpoint, tmp_path):
    folder = tmp_path / "s"
    stereo = np.stack([tone(10.0, sr=16000), tone(10.0, 500.0, sr=16000)], axis=1)
    write_wav(folder / "stereo16k.wav", stereo, sr=16000)
    frame, report = predict_folder(folder, {"models": [str(tiny_checkpoint)]}, progress=False)
    assert frame["row_id"].tolist() == ["stereo16k_5", "stereo16k_10"]
    assert report["audio_seconds"] == pytest.approx(10.0)
    assert SR == 32000


def test_worker_processes_do_not_rerun_the_parents_main(tiny_root, tiny_checkpoint, tmp_path):
    """Spawned predict workers import only the inference package, not the caller's script
    (run.py imports torch and Hydra; with torch loaded, OpenVINO workers shared one core)."""
    marker = tmp_path / "imports.txt"
    script = tmp_path / "caller.py"
    script.write_text(
        "import os\n"
        f"open({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "from birdclef.inference.predict import iter_predict_files\n"
        "if __name__ == '__main__':\n"
        "    import glob, sys\n"
        f"    files = sorted(glob.glob({str(tiny_root / 'test_soundscapes' / '*.ogg')!r}))\n"
        f"    results = list(iter_predict_files([{str(tiny_checkpoint)!r}], files, workers=2))\n"
        "    assert os.getpid() not in {r.worker for r in results}  # scored in worker processes\n"
        "    assert len(results) == len(files) and all(r.error is None for r in results)\n"
        "    assert sys.modules['__main__'].__file__.endswith('caller.py')  # restored\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(marker.read_text().split()) == 1  # the caller only, never a worker
