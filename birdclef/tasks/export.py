"""Task `export`: a checkpoint -> ONNX fp32, ONNX int8 and OpenVINO IR, each checked on real windows.

    python run.py task=export task.model=<run>/checkpoints/best.ckpt task.output=DIR

Writes DIR/model_fp32.onnx, DIR/model_int8.onnx, DIR/openvino/ (model.xml, model.bin,
model.json), DIR/openvino_int8/ (OpenVINO's own int8, by NNCF) and DIR/export.json. Each graph maps the raw dB frames of windows (`frames`,
[B, features, window_frames]) to `scores` (and `frame_scores` for SED nets) and carries the
checkpoint's description, so `birdclef.inference.loading.load_model` runs it without torch.
fp32 and OpenVINO must match torch within `task.tolerance`; int8 is measured against fp32, and
each int8 file is kept only when its macro AUC on the validation recordings is at most
`task.max_auc_drop` below fp32's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from birdclef.core.errors import ConfigError
from birdclef.core.io import atomic_path, current_umask, write_json
from birdclef.core.metric import macro_auc
from birdclef.data.root import data_root
from birdclef.inference.backends import META_KEY, OPENVINO_META, OnnxModel
from birdclef.inference.features import MEL_KINDS
from birdclef.inference.loading import load_model
from birdclef.inference.torch_backend import load_checkpoint
from birdclef.models.quantize import (
    METHODS,
    differences,
    outputs,
    quantize_int8,
    sample_windows,
    validation_windows,
)
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)

FP32_FILE, INT8_FILE, OPENVINO_DIR = "model_fp32.onnx", "model_int8.onnx", "openvino"
OPENVINO_INT8_DIR = "openvino_int8"
OPENVINO_CHOICES = ("auto", True, False)


@task
def run(cfg: DictConfig) -> dict:
    e = cfg.task
    ckpt = _checked_settings(e)
    want_openvino = _want_openvino(e.openvino)
    folder = Path(e.output) if e.output else run_dir(cfg) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    graph, meta = load_checkpoint(ckpt)
    kind = meta["frame_params"].get("kind")
    if kind not in MEL_KINDS:
        raise ConfigError(
            f"{ckpt} reads {kind!r} frames, which only the project computes (exported graphs "
            f"start from {MEL_KINDS} frames): it cannot be exported; run it as the .ckpt."
        )
    root = data_root(cfg)
    log.info("export: windows for the checks and calibration from %s", root)
    check, calibration = sample_windows(
        root, meta, int(e.check_windows), int(e.calibration_windows), int(e.seed)
    )
    reference = outputs(lambda w: _torch_predict(graph, w), check)

    fp32 = folder / FP32_FILE
    with atomic_path(fp32, ".onnx") as tmp:  # published only once it matches torch
        export_onnx(graph, {**meta, "precision": "fp32"}, tmp, int(e.opset), check[:2], ckpt)
        fp32_outputs = _run(lambda: outputs(OnnxModel(tmp).predict, check), fp32)
        fp32_diff = differences(reference, fp32_outputs)
        _require(fp32_diff["max"], float(e.tolerance), f"{fp32} (onnxruntime)")
    metrics = {
        "export/check_windows": len(check),
        "export/calibration_windows": len(calibration),
        "export/fp32_bytes": fp32.stat().st_size,
        "export/fp32_max_diff": fp32_diff["max"],
    }
    files = {"fp32": str(fp32)}
    int8_candidates = {}
    if e.int8:
        files["int8"] = str(folder / INT8_FILE)
        metrics.update(_int8(e, fp32, Path(files["int8"]), meta, calibration, check, fp32_outputs))
        int8_candidates["int8"] = Path(files["int8"])
    if want_openvino:
        files["openvino"] = str(folder / OPENVINO_DIR)
        metrics.update(_openvino(e, fp32, Path(files["openvino"]), meta, check, reference))
        if _want_openvino_int8(e):
            files["openvino_int8"] = str(folder / OPENVINO_INT8_DIR)
            metrics.update(_openvino_int8(fp32, Path(files["openvino_int8"]), meta, calibration,
                                          check, fp32_outputs))  # fmt: skip
            int8_candidates["openvino_int8"] = Path(files["openvino_int8"])
    if int8_candidates:
        metrics.update(_auc_gate(e, root, ckpt, meta, fp32, int8_candidates))
        metrics.update(_speed_gate(e, check, int8_candidates, metrics, folder))
        for name in int8_candidates:
            if not metrics[f"export/{name}_kept"]:
                del files[name]

    settings = OmegaConf.to_container(e, resolve=True)
    report = {"model": str(ckpt), "files": files, "metrics": metrics, "settings": settings}
    write_json(folder / "export.json", {**report, "meta": meta})
    log.info("export: %s", _summary(metrics, folder))
    return metrics


def _int8(e, fp32: Path, int8: Path, meta, calibration, check, fp32_outputs) -> dict:
    """Quantize, then measure int8 against fp32 on the check windows (reported, not bounded)."""
    with tempfile.TemporaryDirectory(dir=int8.parent) as work, atomic_path(int8, ".onnx") as tmp:
        try:
            quantize_int8(fp32, tmp, calibration, str(e.calibration_method), Path(work))
        except Exception as err:
            raise ConfigError(
                f"int8 quantization of {fp32.name} failed ({_brief(err)}); set task.int8=false "
                "to write the other formats only."
            ) from err
        _stamp(tmp, {**meta, "precision": "int8"})
        diff = differences(fp32_outputs, _run(lambda: outputs(OnnxModel(tmp).predict, check), int8))
    return {
        "export/int8_bytes": int8.stat().st_size,
        "export/size_ratio": fp32.stat().st_size / int8.stat().st_size,
        "export/int8_max_diff": diff["max"],
        "export/int8_mean_diff": diff["mean"],
        "export/int8_top1_agreement": diff["top1"],
    }


def _auc_gate(e, root: Path, ckpt: Path, meta, fp32: Path, candidates: dict[str, Path]) -> dict:
    """Score fp32 and each int8 candidate (name -> file or folder) on the validation
    recordings; keep a candidate only within task.max_auc_drop of fp32, delete the others."""
    windows, truth, source = validation_windows(root, meta, ckpt, int(e.gate_windows))

    def auc(path: Path) -> float:
        return macro_auc(truth, outputs(load_model(path).predict, windows)[0][:, : truth.shape[1]])

    fp32_auc, bound = auc(fp32), float(e.max_auc_drop)
    metrics = {"export/fp32_auc": fp32_auc, "export/gate_windows": float(len(windows))}
    for name, path in candidates.items():
        int8_auc = auc(path)
        drop = fp32_auc - int8_auc
        kept = bool(np.isfinite(drop) and drop <= bound)
        if not kept:
            _remove(path)
            log.warning(
                "export: %s scores %.4f against fp32's %.4f on %d windows of %s, a drop of %.4f "
                "over task.max_auc_drop=%g: %s not written (fp32 and OpenVINO are).",
                name, int8_auc, fp32_auc, len(windows), source, drop, bound, path.name,
            )  # fmt: skip
        metrics |= {f"export/{name}_auc": int8_auc, f"export/{name}_auc_drop": drop,
                    f"export/{name}_kept": float(kept)}  # fmt: skip
    return metrics


def _remove(path: Path) -> None:
    """Delete a refused int8 file (ONNX) or folder (OpenVINO)."""
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


SPEED_CALLS, SPEED_WARMUP = 7, 2  # timed and untimed calls of each model in the speed gate
SPEED_BATCH = 12  # windows per call: a one-minute file's windows


def _speed_gate(e, check, candidates: dict[str, Path], metrics: dict, folder: Path) -> dict:
    """Keep an int8 file only when it runs at least task.int8_min_speedup times as fast as its
    fp32 counterpart (ONNX int8 vs ONNX fp32, OpenVINO int8 vs OpenVINO fp32) on this
    machine, one thread, a one-minute file's windows, medians of interleaved calls."""
    bound = float(e.int8_min_speedup)
    if bound <= 0:
        return {}
    references = {"int8": folder / FP32_FILE, "openvino_int8": folder / OPENVINO_DIR}
    batch = np.ascontiguousarray(np.resize(check, (SPEED_BATCH, *check.shape[1:])))
    out = {}
    for name, path in candidates.items():
        if not metrics.get(f"export/{name}_kept") or not references[name].exists():
            continue
        models = [load_model(references[name]), load_model(path)]
        times = [[], []]
        for call in range(SPEED_WARMUP + SPEED_CALLS):
            for model, spent in zip(models, times, strict=True):
                tic = time.perf_counter()
                model.predict(batch)
                if call >= SPEED_WARMUP:
                    spent.append(time.perf_counter() - tic)
        fp32_ms, int8_ms = (1000.0 * statistics.median(t) for t in times)
        kept = fp32_ms / int8_ms >= bound
        if not kept:
            _remove(path)
            log.warning(
                "export: %s runs %.1f ms per %d windows against fp32's %.1f ms here (%.2fx, under "
                "task.int8_min_speedup=%g): %s not written.",
                name, int8_ms, SPEED_BATCH, fp32_ms, fp32_ms / int8_ms, bound, path.name,
            )  # fmt: skip
        out |= {f"export/{name}_ms": int8_ms, f"export/{name}_fp32_ms": fp32_ms,
                f"export/{name}_kept": float(kept)}  # fmt: skip
    return out


@contextlib.contextmanager
def _published_folder(target: Path):
    """A scratch folder beside `target`, moved onto it only when the block succeeds."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it owner-only
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_ir(make_model, folder: Path, meta: dict, precision: str, failed: str) -> None:
    """`make_model()` saved as folder/model.xml with its description; a failure as one error."""
    import openvino as ov

    try:
        ov.save_model(make_model(), str(folder / "model.xml"), compress_to_fp16=False)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{failed} ({_brief(err)})") from err
    write_json(folder / OPENVINO_META, {**meta, "precision": precision})


def _openvino(e, fp32: Path, ir: Path, meta, check, reference) -> dict:
    """Convert; publish the IR once it matches torch in f32; measure what bf16 would cost."""
    import openvino as ov

    with _published_folder(ir) as tmp:  # fp32 weights: held to the ONNX file's tolerance
        _save_ir(lambda: ov.convert_model(str(fp32)), tmp, meta, "fp32",
                 f"OpenVINO cannot convert {fp32.name}; set task.openvino=false to write the "
                 "ONNX files only")  # fmt: skip
        diff = differences(reference, _run(lambda: outputs(load_model(tmp).predict, check), ir))
        _require(diff["max"], float(e.tolerance), f"{ir} (OpenVINO)")
        # predict.openvino_precision=bf16: faster on AVX512-BF16/AMX CPUs (f32 on the others)
        bf16 = outputs(load_model(tmp, openvino_precision="bf16").predict, check)
    return {
        "export/openvino_bytes": sum(p.stat().st_size for p in ir.iterdir()),
        "export/openvino_max_diff": diff["max"],
        "export/openvino_bf16_max_diff": differences(reference, bf16)["max"],
    }


def _openvino_int8(fp32: Path, ir: Path, meta, calibration, check, fp32_outputs) -> dict:
    """OpenVINO's own int8 (NNCF on the converted fp32 graph), measured against fp32."""
    import openvino as ov

    from birdclef.models.quantize import quantize_openvino_int8

    with _published_folder(ir) as tmp:
        _save_ir(lambda: quantize_openvino_int8(ov.convert_model(str(fp32)), calibration), tmp,
                 meta, "int8", f"OpenVINO int8 quantization of {fp32.name} failed; set "
                 "task.openvino_int8=false to write the other formats only")  # fmt: skip
        diff = differences(fp32_outputs, _run(lambda: outputs(load_model(tmp).predict, check), ir))
    return {
        "export/openvino_int8_bytes": sum(p.stat().st_size for p in ir.iterdir()),
        "export/openvino_int8_max_diff": diff["max"],
        "export/openvino_int8_mean_diff": diff["mean"],
        "export/openvino_int8_top1_agreement": diff["top1"],
    }


def _want_openvino_int8(e) -> bool:
    """task.openvino_int8: auto = with task.int8 where NNCF imports (said so where it does not)."""
    setting = e.openvino_int8
    if setting not in OPENVINO_CHOICES:
        raise ConfigError(f"task.openvino_int8={setting!r} must be auto, true or false.")
    available = importlib.util.find_spec("nncf") is not None
    if setting is True and not available:
        raise ConfigError(
            "task.openvino_int8=true but nncf is not installed: pip install nncf "
            "(or pip install -e '.[openvino]'), or set task.openvino_int8=auto."
        )
    if setting == "auto" and e.int8 and not available:
        log.info("export: no OpenVINO int8 (pip install nncf to write openvino_int8/)")
    return available and (setting is True or (setting == "auto" and bool(e.int8)))


def _checked_settings(e: DictConfig) -> Path:
    if e.model is None:
        raise ConfigError("task.model is not set: give task.model=<run>/checkpoints/best.ckpt.")
    ckpt = Path(e.model)
    if not ckpt.is_file():
        raise ConfigError(f"task.model={ckpt} not found; give a best.ckpt / last.ckpt of a run.")
    if not float(e.tolerance) > 0 or int(e.check_windows) < 1 or int(e.calibration_windows) < 1:
        raise ConfigError(
            f"task.tolerance={e.tolerance} must be > 0, task.check_windows="
            f"{e.check_windows} and task.calibration_windows={e.calibration_windows} >= 1."
        )
    if str(e.calibration_method) not in METHODS:
        raise ConfigError(
            f"task.calibration_method={e.calibration_method!r} must be one of {sorted(METHODS)}."
        )
    if e.openvino not in OPENVINO_CHOICES:
        raise ConfigError(f"task.openvino={e.openvino!r} must be auto, true or false.")
    return ckpt


def _want_openvino(setting) -> bool:
    available = importlib.util.find_spec("openvino") is not None
    if setting is True and not available:
        raise ConfigError(
            "task.openvino=true but openvino is not installed: pip install openvino, "
            "or set task.openvino=auto."
        )
    return bool(setting) and available


def export_onnx(graph, meta: dict, path: Path, opset: int, example: np.ndarray, ckpt) -> None:
    """Write the window graph to `path` with its description in the metadata."""
    names = list(meta["outputs"])
    axes = {name: {0: "batch"} for name in ["frames", *names]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
            torch.onnx.export(
                graph, (torch.from_numpy(example),), str(path), dynamo=False,
                opset_version=opset, input_names=["frames"], output_names=names,
                dynamic_axes=axes,
            )  # fmt: skip
    except Exception as err:
        raise ConfigError(
            f"{ckpt}: its net ({type(graph.net).__name__}) cannot be exported to ONNX "
            f"opset {opset} ({_brief(err)}); run it as the .ckpt."
        ) from err
    _stamp(path, meta)


def _stamp(path: Path, meta: dict) -> None:
    """Store `meta` (JSON) in the ONNX file's metadata under META_KEY, replacing any earlier one."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta, sort_keys=True))
    onnx.save(proto, str(path))


@torch.inference_mode()
def _torch_predict(graph, windows: np.ndarray):
    out = graph(torch.from_numpy(windows))
    out = out if isinstance(out, tuple) else (out, None)
    return tuple(None if o is None else o.numpy() for o in out)


def _run(compute, path: Path):
    """`compute()`, with a failure of the exported graph on real windows as one clear error."""
    try:
        return compute()
    except Exception as err:
        raise ConfigError(
            f"the exported {path.name} fails on real windows ({_brief(err)}), so it was not "
            "written: the net does not export faithfully (often a net that computes with its "
            "input's shape, which the ONNX tracer records as ops); run it as the .ckpt."
        ) from err


def _brief(err: Exception) -> str:
    """The error's type and first line: library messages can run to pages (traced graphs)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _require(diff: float, tolerance: float, what: str) -> None:
    if diff > tolerance:
        raise ConfigError(
            f"{what} differs from torch by {diff:.3g} on real windows, more than "
            f"task.tolerance={tolerance:g}, so it was not written: the export is not faithful "
            "(often a net that computes with its input's shape, which the ONNX tracer records "
            "as ops); raise task.tolerance only if that difference is acceptable."
        )


def _summary(m: dict, folder: Path) -> str:
    parts = [
        f"fp32 {m['export/fp32_bytes'] / 1e6:.2f} MB (max diff {m['export/fp32_max_diff']:.1g})"
    ]
    if "export/int8_bytes" in m:
        parts.append(
            f"int8 {m['export/int8_bytes'] / 1e6:.2f} MB ({m['export/size_ratio']:.1f}x smaller, "
            f"max diff {m['export/int8_max_diff']:.3f}, mean {m['export/int8_mean_diff']:.4f}, "
            f"top-1 agreement {m['export/int8_top1_agreement']:.0%})"
        )
    for name in ("int8", "openvino_int8"):
        if f"export/{name}_auc" in m:
            verdict = "kept" if m[f"export/{name}_kept"] else "refused"
            speed = (f", {m[f'export/{name}_fp32_ms'] / m[f'export/{name}_ms']:.2f}x fp32's speed"
                     if f"export/{name}_ms" in m else "")  # fmt: skip
            parts.append(f"{name} AUC drop {m[f'export/{name}_auc_drop']:+.4f}{speed} ({verdict})")
    if "export/openvino_bytes" in m:
        parts.append(
            f"OpenVINO {m['export/openvino_bytes'] / 1e6:.2f} MB "
            f"(max diff {m['export/openvino_max_diff']:.1g})"
        )
    return f"{folder}: " + "; ".join(parts)
