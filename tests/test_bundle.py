"""task=bundle: the offline folder runs without the project or torch and writes what task=predict writes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError
from birdclef.inference.bundle import check_imports
from tests.conftest import compose_cfg

BLOCKED = ("birdclef", "torch", "lightning", "hydra", "omegaconf")  # what a bundle must not need
BAD_ROWS = 12  # rows a file that cannot be decoded gets (one competition minute)


def export_onnx(checkpoint: Path, path: Path) -> Path:
    """An ONNX model as `task=export` writes it: the window graph, its description in the metadata.

    The export is checked against the torch graph, so the bundle is compared with a faithful model.
    """
    import onnx
    import onnxruntime as ort
    import torch

    from birdclef.inference.backends import META_KEY
    from birdclef.inference.torch_backend import load_checkpoint

    graph, meta = load_checkpoint(checkpoint)
    n_features = int(graph.frontend.n_features)
    adaptive_pool = torch.nn.functional.adaptive_avg_pool2d

    def rows_pool(x, output_size):
        """`adaptive_avg_pool2d(x, (rows, x.shape[-1]))` with a constant pooling size.

        The legacy exporter refuses the MelCNN's adaptive pools (band pooling, band
        statistics): their output size is read from the traced input. Where the rows
        split into equal bands, the same mean is a reshape and a mean.
        """
        rows, columns = (output_size,) * 2 if isinstance(output_size, int) else output_size
        if columns == x.shape[-1] and rows and x.shape[-2] % rows == 0:
            return x.unflatten(-2, (rows, -1)).mean(dim=-2)
        return adaptive_pool(x, output_size)

    with mock.patch.object(torch.nn.functional, "adaptive_avg_pool2d", rows_pool):
        torch.onnx.export(
            graph, torch.zeros(2, n_features, meta["window_frames"]), str(path), dynamo=False,
            opset_version=17, input_names=["frames"], output_names=["scores"],
            dynamic_axes={"frames": {0: "batch"}, "scores": {0: "batch"}},
        )  # fmt: skip
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps({**meta, "precision": "fp32"})
    onnx.save(proto, str(path))
    frames = np.random.default_rng(0).uniform(-80, 0, (3, n_features, meta["window_frames"]))
    frames = frames.astype(np.float32)
    with torch.inference_mode():
        want = graph(torch.from_numpy(frames)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"frames": frames}
    )[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    return path


@pytest.fixture(scope="module")
def onnx_model(tiny_checkpoint, tmp_path_factory) -> Path:
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("export") / "model_fp32.onnx")


@pytest.fixture(scope="module")
def openvino_model(onnx_model, tmp_path_factory) -> Path | None:
    """The same net as an OpenVINO folder (model.xml, model.bin, model.json), as `task=export`
    writes it; None where openvino (an optional dependency) is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return None
    import onnx
    import openvino as ov

    from birdclef.inference.backends import META_KEY, OPENVINO_META

    folder = tmp_path_factory.mktemp("export") / "openvino"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(onnx_model)), folder / "model.xml", compress_to_fp16=False)
    props = {p.key: p.value for p in onnx.load(str(onnx_model)).metadata_props}
    (folder / OPENVINO_META).write_text(props[META_KEY])
    (folder / "model_fp32.onnx").write_bytes(b"not part of the OpenVINO model")
    return folder


@pytest.fixture(scope="module")
def soundscapes(tiny_root, tmp_path_factory) -> Path:
    """The tiny test soundscapes and one file that cannot be decoded."""
    folder = tmp_path_factory.mktemp("soundscapes")
    for path in sorted((tiny_root / "test_soundscapes").glob("*.ogg")):
        shutil.copy(path, folder / path.name)
    (folder / "broken.ogg").write_bytes(b"OggS not really an ogg file" * 10)
    return folder


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict:
    """An environment whose Python (and its worker processes) cannot import the project or torch."""
    blockers = tmp_path_factory.mktemp("blockers")
    for name in BLOCKED:
        (blockers / name).mkdir()
        (blockers / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the bundle must run without it')\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # ahead of site-packages and of the editable install's finder (appended to sys.meta_path)
    return {**env, "PYTHONPATH": str(blockers), "PYTHONNOUSERSITE": "1"}


def build(tmp: Path, root: Path, models, output: Path, *extra: str) -> dict:
    from birdclef.tasks.bundle import run

    cfg = compose_cfg(
        f"data.root={root}", "task=bundle", "task.workers=1", f"task.output={output}", "task.wheels=null",
        f"predict.models=[{','.join(str(m) for m in models)}]", *extra, tmp=tmp,
    )  # fmt: skip
    return run(cfg)


def run_bundle(bundle: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The bundle as a competition notebook runs it: `python predict.py ...` in its folder."""
    return subprocess.run(
        [sys.executable, "predict.py", *args], cwd=bundle, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_bundle_runs_alone_and_matches_predict(
    tiny_root, onnx_model, openvino_model, soundscapes, blocked_env, tmp_path
):
    bundle = tmp_path / "bundle"
    models = [onnx_model, *([openvino_model] if openvino_model else [])]
    metrics = build(tmp_path / "run", tiny_root, models, bundle)
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"predict.py", "settings.json", "requirements.txt", "README.md"} <= names
    assert {"birdclef_runtime/inference/runtime.py", "sample_submission.csv"} <= names
    assert {"birdclef_runtime/core/rows.py", "birdclef_runtime/core/errors.py"} <= names
    assert "birdclef_runtime/inference/torch_backend.py" not in names
    # the OpenVINO model is its three files, without the rest of its folder
    openvino = (
        [f"models/openvino/model.{s}" for s in ("xml", "bin", "json")] if openvino_model else []
    )
    assert {n for n in names if n.startswith("models/")} == {"models/model_fp32.onnx", *openvino}
    assert metrics["bundle/models"] == len(models) and metrics["bundle/files"] == len(names)
    assert metrics["bundle/bytes"] == sum((bundle / n).stat().st_size for n in names)
    settings = json.loads((bundle / "settings.json").read_text())
    assert settings["models"] == ["models/model_fp32.onnx", *["models/openvino"][: len(openvino)]]
    assert settings["taxonomy"] == "sample_submission.csv" and settings["workers"] == 1
    requirements = (bundle / "requirements.txt").read_text()
    needed = {line.split("==")[0] for line in requirements.splitlines() if line and line[0] != "#"}
    assert "onnxruntime" in needed and "torch" not in requirements and "onnx" not in needed
    assert ("openvino" in needed) == bool(openvino_model)
    assert "scipy" in needed  # task.extras' default: scipy's FFT (the minimum: task.extras=[])

    probe = "\n".join(
        f"try:\n    import {n}\nexcept ImportError:\n    print('{n}')" for n in BLOCKED
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=bundle, env=blocked_env, capture_output=True, text=True
    )
    assert result.stdout.split() == list(BLOCKED), result.stderr

    # two worker processes: predict.py must survive being imported again by each of them
    result = run_bundle(
        bundle, blocked_env, str(soundscapes), "--output", "out.csv", "--workers", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "broken.ogg" in result.stderr and "Traceback" not in result.stderr
    got = pd.read_csv(bundle / "out.csv")

    from birdclef.tasks.predict import run as predict

    expected_csv = tmp_path / "expected.csv"
    cfg = compose_cfg(
        f"data.root={tiny_root}", "task=predict", f"predict.models=[{','.join(map(str, models))}]",
        f"predict.soundscapes={soundscapes}", f"predict.output={expected_csv}",
        "predict.workers=1", tmp=tmp_path / "predict",
    )  # fmt: skip
    predict(cfg)
    expected = pd.read_csv(expected_csv)
    classes = pd.read_csv(tiny_root / "sample_submission.csv", nrows=0).columns[1:].tolist()
    assert list(got.columns) == ["row_id", *classes] == list(expected.columns)
    assert got["row_id"].tolist() == expected["row_id"].tolist()
    np.testing.assert_allclose(got[classes].to_numpy(), expected[classes].to_numpy(), atol=1e-5)
    assert got["row_id"].str.startswith("broken_").sum() == BAD_ROWS
    good = [sf.info(p).duration for p in soundscapes.glob("test_*.ogg")]
    assert len(good) == 2 and len(got) == BAD_ROWS + sum(round(s / 5) for s in good)

    # the notebook's save run: an empty test folder writes the sample submission, exit 0
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_bundle(bundle, blocked_env, str(empty), "--output", "saved.csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "holds no audio" in lines[0] and result.stderr == ""
    sample = pd.read_csv(bundle / "sample_submission.csv", dtype={"row_id": str})
    saved = pd.read_csv(bundle / "saved.csv", dtype={"row_id": str})
    assert list(saved.columns) == list(sample.columns) and saved["row_id"].equals(sample["row_id"])
    np.testing.assert_allclose(saved.iloc[:, 1:], sample.iloc[:, 1:], rtol=1e-8)
    # a folder that is not there is still an error: one line, exit 2, nothing written
    result = run_bundle(bundle, blocked_env, str(tmp_path / "nowhere"), "--output", "never.csv")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "is not a folder" in lines[0]
    assert not (bundle / "never.csv").exists()


def test_bundle_refuses_checkpoints_and_occupied_folders(
    tiny_root, tiny_checkpoint, onnx_model, tmp_path
):
    with pytest.raises(ConfigError, match=r"task=export") as err:
        build(tmp_path / "a", tiny_root, [onnx_model, tiny_checkpoint], tmp_path / "b1")
    assert str(tiny_checkpoint) in str(err.value) and not (tmp_path / "b1").exists()

    occupied = tmp_path / "b2"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"task.overwrite=true"):
        build(tmp_path / "c", tiny_root, [onnx_model], occupied)
    assert (occupied / "keep.txt").read_text() == "mine"

    build(tmp_path / "d", tiny_root, [onnx_model, onnx_model], occupied, "task.overwrite=true")
    assert not (occupied / "keep.txt").exists()
    settings = json.loads((occupied / "settings.json").read_text())
    assert settings["models"] == ["models/model_fp32.onnx", "models/model_fp32_2.onnx"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_extras_are_listed_and_an_unknown_one_is_refused(tiny_root, onnx_model, tmp_path):
    build(tmp_path / "run", tiny_root, [onnx_model], tmp_path / "minimal", "task.extras=[]")
    lines = (tmp_path / "minimal" / "requirements.txt").read_text().splitlines()
    needed = {line.split("==")[0] for line in lines if line and line[0] != "#"}
    assert needed == {"numpy", "pandas", "soundfile", "onnxruntime"}
    assert any(line.startswith("#   scipy:") for line in lines)  # named as an option
    with pytest.raises(ConfigError, match=r"task.extras \['sklearn'\].*one of"):
        build(tmp_path / "run2", tiny_root, [onnx_model], tmp_path / "b2", "task.extras=[sklearn]")
    assert not (tmp_path / "b2").exists()


def test_import_check_names_forbidden_imports(tmp_path):
    package = tmp_path / "birdclef_runtime"
    package.mkdir()
    (package / "ok.py").write_text("import os\nimport numpy as np\nfrom . import ok\n")
    (package / "bad.py").write_text("import json\nfrom birdclef.data import audio\nimport torch\n")
    assert check_imports(tmp_path) == [
        "birdclef_runtime/bad.py:2 imports birdclef",
        "birdclef_runtime/bad.py:3 imports torch",
    ]


def test_failed_bundle_leaves_nothing(tiny_root, onnx_model, tmp_path, monkeypatch):
    from birdclef.inference import bundle

    monkeypatch.setattr(bundle, "ALLOWED_IMPORTS", bundle.ALLOWED_IMPORTS - {"soundfile"})
    with pytest.raises(
        RuntimeError, match=r"birdclef_runtime/inference/predict.py:\d+ imports soundfile"
    ):
        build(tmp_path / "run", tiny_root, [onnx_model], tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("taxonomy", [None, "taxonomy.csv"])
def test_bundle_readme_names_the_column_order(taxonomy):
    from birdclef.inference.bundle_files import readme

    settings = {"models": ["models/a.onnx"], "taxonomy": taxonomy, "blend": "rank",
                "weights": None, "stride_seconds": 5.0, "workers": 4, "threads": 1}  # fmt: skip
    text = readme(settings, ["export/a.onnx"], "3 wheels")
    expected = "`taxonomy.csv`" if taxonomy else "the first model's classes"
    assert f"in the order of\n  {expected}." in text
    assert "`the first model's classes`" not in text
    assert "`models/a.onnx` (from `export/a.onnx`)" in text
