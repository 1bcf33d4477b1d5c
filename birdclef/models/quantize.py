"""Real windows for `task=export`, the comparisons it checks exports by, and int8 quantization.

Windows are 5-s pieces of the training recordings of the data the model was trained on,
framed exactly as the exported model's front end frames a soundscape (`LogMelFrames`),
drawn reproducibly (seeded) from as many recordings as there are windows. Check windows
come from other recordings than calibration windows where there are at least two, so the
int8 differences `task=export` reports are measured on windows the calibration never saw.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from birdclef.core.errors import AudioError, ConfigError, DataError
from birdclef.data.audio import load_audio
from birdclef.data.labels import presence
from birdclef.data.metadata import load_metadata
from birdclef.data.windows import recording_window_starts
from birdclef.inference.features import LogMelFrames, cut_windows

log = logging.getLogger(__name__)

CHECK_BATCH = 16  # windows per forward pass in the checks: bounds memory on big nets
CALIBRATION_BATCH = 8  # windows per calibration forward pass: bounds the augmented graph's memory
# task.calibration_method -> onnxruntime's CalibrationMethod
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def sample_windows(
    root: Path, meta: dict, n_check: int, n_calibration: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(check, calibration) windows [n, features, window_frames] of `root`'s training recordings."""
    metadata = load_metadata(root)
    paths = [metadata.audio_path(f) for f in metadata.train["filename"]]
    rng = np.random.default_rng(seed)
    order = [paths[i] for i in rng.permutation(len(paths))]
    share = round(len(order) * n_check / (n_check + n_calibration))
    split = min(max(share, 1), len(order) - 1) if len(order) > 1 else 1
    check_paths, calibration_paths = order[:split], order[split:] or order
    frames_of = LogMelFrames(meta["frame_params"])
    check = _draw(check_paths[:n_check], n_check, frames_of, meta, rng, "check windows")
    calibration = _draw(
        calibration_paths[:n_calibration], n_calibration, frames_of, meta, rng, "calibration"
    )
    return check, calibration


def _draw(paths, count: int, frames_of: LogMelFrames, meta: dict, rng, desc: str) -> np.ndarray:
    """`count` windows at random offsets, spread round-robin over `paths`."""
    n, pad = int(meta["window_frames"]), float(meta["pad_value"])
    per_path = np.bincount(np.arange(count) % len(paths), minlength=len(paths))
    windows = []
    for path, k in tqdm(list(zip(paths, per_path, strict=True)), desc=desc, leave=False):
        try:
            frames = frames_of(load_audio(path, frames_of.sample_rate))
        except AudioError as err:
            log.warning("export: skipping a recording for the %s: %s", desc, err)
            continue
        starts = rng.integers(0, max(1, len(frames) - n + 1), size=int(k))
        windows.append(cut_windows(frames, starts, n, pad))
    if not windows:
        raise DataError(
            f"none of the {len(paths)} recordings picked for the {desc} could be read; "
            "point data.root at the data the checkpoint was trained on."
        )
    return np.concatenate(windows)


def validation_windows(
    root: Path, meta: dict, ckpt: Path, per_recording: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Windows [n, features, frames] of the checkpoint run's validation recordings, their 0/1
    truth [n, classes] (each window its recording's species), and where the recordings came
    from. Without the run's split.csv, every training recording of `root` (said so)."""
    metadata = load_metadata(root)
    split_csv = Path(ckpt).parent.parent / "split.csv"
    if split_csv.is_file():
        split = pd.read_csv(split_csv, dtype=str)
        names, source = split.loc[split["split"] == "val", "filename"].tolist(), str(split_csv)
    else:
        names, source = metadata.train["filename"].tolist(), f"every recording of {root}"
    train = metadata.train.set_index("filename").loc[names]
    frames_of = LogMelFrames(meta["frame_params"])
    n, pad = int(meta["window_frames"]), float(meta["pad_value"])
    hop = int(meta["frame_params"]["hop_length"])
    windows, rows = [], []
    for name in names:
        try:
            frames = frames_of(load_audio(metadata.audio_path(name), frames_of.sample_rate))
        except AudioError as err:
            log.warning("export: skipping %s for the AUC gate: %s", name, err)
            continue
        samples = (len(frames) - 1) * hop
        starts = recording_window_starts(max(samples, 1), n * hop)[:per_recording]
        windows.append(cut_windows(frames, np.array(starts) // hop, n, pad))
        rows += [name] * len(starts)
    if not windows:
        raise DataError(f"no validation recording from {source} could be read for the AUC gate.")
    truth = presence(train.loc[rows, "primary_label"], train.loc[rows, "secondary_labels"],
                     metadata.classes)  # fmt: skip
    return np.concatenate(windows), truth, source


def outputs(predict, windows: np.ndarray) -> list[np.ndarray]:
    """[scores, frame_scores where given] of all `windows` by `predict`, CHECK_BATCH at a time."""
    parts = [predict(windows[i : i + CHECK_BATCH]) for i in range(0, len(windows), CHECK_BATCH)]
    return [np.concatenate(col) for col in zip(*parts, strict=True) if col[0] is not None]


def differences(reference: list[np.ndarray], other: list[np.ndarray]) -> dict:
    """Largest |difference| over every output; mean |difference| and top-1 agreement of scores."""
    if len(reference) != len(other):
        raise ConfigError(f"an exported graph gives {len(other)} outputs, torch {len(reference)}.")
    gaps = [np.abs(a.astype(np.float64) - b) for a, b in zip(reference, other, strict=True)]
    return {
        "max": float(max(g.max() for g in gaps)),
        "mean": float(gaps[0].mean()),
        "top1": float((reference[0].argmax(axis=1) == other[0].argmax(axis=1)).mean()),
    }


def quantize_int8(fp32: Path, out: Path, windows: np.ndarray, method: str, work: Path) -> None:
    """Write `fp32` statically quantized to `out`: QDQ, int8 per-channel weights, uint8 activations.

    Every op onnxruntime can quantize that the first convolution feeds is quantized, so activations stay 8-bit between ops (on a timm EfficientNet-B0
    quantizing only the weight ops ran 195 ms per 12 windows against fp32's 131, since every
    SiLU sat in fp32 between a dequantize and a quantize; all ops: 102 ms), but not that
    convolution itself: what comes before it (the per-window dB floor, the MFCC's
    DCT, band statistics of the raw frames, the input norm (PCEN too) and the stem) sees
    raw or standardised dB values whose rare extremes stretch an 8-bit grid. Keeping the
    stem in fp32 cut the mean |int8 - fp32| score difference of an EfficientNet-Lite0
    trained on real_xc from 0.018 to 0.004, for a few hundred fp32 weights.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ConfigError(f"task.calibration_method={method!r} must be one of {sorted(METHODS)}.")

    class Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"frames": np.ascontiguousarray(windows[i : i + CALIBRATION_BATCH])}
                for i in range(0, len(windows), CALIBRATION_BATCH)
            )

        def get_next(self):
            return next(self.batches, None)

    source = work / "preprocessed.onnx"
    with _quiet_root_logger():  # onnxruntime logs every rescaled bias on the root logger
        try:  # shape inference and graph fusions let more ops be quantized; optional
            quant_pre_process(str(fp32), str(source))
        except Exception as err:  # noqa: BLE001 - a failure here only costs the optimisation
            log.warning("export: int8 pre-processing skipped (%s: %s)", type(err).__name__, err)
            source = fp32
        graph = onnx.load(str(source)).graph
        nodes = graph.node
        trunk = _fed_by_first_conv(nodes, {t.name: list(t.dims) for t in graph.initializer})
        kept = [n.name for n in nodes if n.name not in trunk]
        quantize_static(
            str(source),
            str(out),
            Windows(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=None,  # all, not only the weight ops (see above)
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            nodes_to_exclude=kept,
        )


def _fed_by_first_conv(nodes, shapes: dict[str, list[int]]) -> set[str]:
    """Names of the nodes downstream of the stem (nodes are topologically sorted).

    The stem is the first convolution with more than one output channel: a one-channel
    convolution before it is a fixed filter of the input norm (PCEN's smoother on inputs
    over `PCEN.MATRIX_FRAMES`, whose taps fall to 1e-6 and would vanish on an 8-bit grid;
    on windows it is a MatMul before the stem), kept in fp32 like the stem.
    """
    first = next(
        (n for n in nodes if n.op_type == "Conv" and shapes.get(n.input[1], [2])[0] > 1), None
    )
    consumers = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)
    reached: set[str] = set()
    pending = list(first.output) if first is not None else []
    while pending:
        for node in consumers[pending.pop()]:
            if node.name not in reached:
                reached.add(node.name)
                pending.extend(node.output)
    return reached


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_openvino_int8(model, windows: np.ndarray):
    """`model` (an OpenVINO model converted from the fp32 ONNX file) statically quantized by NNCF.

    OpenVINO's own int8 path, not onnxruntime's QDQ file read by OpenVINO: converted first, the
    graph's SiLU is one `Swish` op that NNCF leaves fused into the convolution before it, so an
    EfficientNet-B0 runs at int8 end to end (on AVX512-VNNI, 1.8x faster than fp32; the QDQ
    file read by OpenVINO was slower than fp32, since each SiLU became a sigmoid between two
    fake-quantize steps). As in `quantize_int8`, the stem and everything before it (the input
    norm on raw dB values) stay in fp32.
    """
    try:
        import nncf
    except ImportError as err:
        raise ConfigError(
            "OpenVINO int8 needs NNCF: pip install nncf (or pip install -e '.[openvino]'), "
            "or set task.openvino_int8=false."
        ) from err
    ops = list(model.get_ordered_ops())
    stem = next(
        (i for i, op in enumerate(ops) if op.get_type_name() == "Convolution"
         and op.get_output_partial_shape(0)[1].get_length() > 1),
        None,
    )  # fmt: skip
    fixed = {"Constant", "Parameter", "Result"}
    ignored = [op.get_friendly_name() for op in ops[: (stem + 1) if stem is not None else 0]
               if op.get_type_name() not in fixed]  # fmt: skip
    batches = [np.ascontiguousarray(windows[i : i + CALIBRATION_BATCH], dtype=np.float32)
               for i in range(0, len(windows), CALIBRATION_BATCH)]  # fmt: skip
    with _quiet_root_logger():
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            subset_size=len(batches) * CALIBRATION_BATCH,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
            fast_bias_correction=True,
        )
