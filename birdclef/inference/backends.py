"""Models a submission runs: exported ONNX / OpenVINO graphs and (via torch_backend) checkpoints.

Every model answers the same contract, so the predict loop, blends and the bundle treat
them alike:
- `classes` (the scored columns it outputs, in its order), `sample_rate`, `frame_key`;
- `frames(wave)`: a whole recording -> frames [T, features] (computed once per file and
  shared by every model with the same `frame_key`);
- `window_frames` and `pad_value`: how windows are cut from those frames;
- `predict(windows [B, features, n]) -> (scores [B, classes], frame_scores [B, T', classes]
  or None)`, scores in [0, 1]; `frame_scores` where the net is a SED net.

An exported graph takes the raw dB frames of its windows as `frames` and does the rest
(per-window floor, net, activation); its description (`META_KEY`) is stored in the ONNX
file's metadata and, for OpenVINO, in `model.json` beside `model.xml`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import InferenceError
from .features import MEL_KINDS, LogMelFrames

META_KEY = "birdclef"  # ONNX metadata key holding the model's description (JSON)
META_FORMAT = "birdclef-window-model-1"
OPENVINO_META = "model.json"
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")


def frame_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


class WindowModel:
    """Shared part of every backend: the description and the numpy front end."""

    def __init__(self, path: Path, meta: dict) -> None:
        if meta.get("format") != META_FORMAT:
            raise InferenceError(
                f"{path} is not a model exported by this version of birdclef (format "
                f"{meta.get('format')!r}, expected {META_FORMAT!r}): export it again with "
                "`python run.py task=export task.model=<checkpoint>`."
            )
        self.path, self.meta = Path(path), meta
        self.name = str(meta.get("name") or self.path.stem)
        self.classes = [str(c) for c in meta["classes"]]
        self.frame_params = dict(meta["frame_params"])
        self.frame_key = frame_key(self.frame_params)
        self.sample_rate = int(self.frame_params["sample_rate"])
        self.window_frames = int(meta["window_frames"])
        self.pad_value = float(meta["pad_value"])
        self.has_frame_scores = "frame_scores" in meta.get("outputs", ["scores"])
        self._frames = (
            LogMelFrames(self.frame_params) if self.frame_params.get("kind") in MEL_KINDS else None
        )

    def frames(self, wave: np.ndarray) -> np.ndarray:
        if self._frames is None:
            raise InferenceError(
                f"{self.path}: frames of kind {self.frame_params.get('kind')!r} cannot be "
                "computed without the project (only log-mel models are exported)."
            )
        return self._frames(wave)

    @property
    def frames_seconds(self) -> dict[str, float]:
        """Seconds of the last `frames` call by part: stft (windowed FFT, power), mel (and dB)."""
        return dict(getattr(self._frames, "seconds", {}))

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _split(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        scores = np.asarray(outputs[0], dtype=np.float32)
        frame_scores = np.asarray(outputs[1], dtype=np.float32) if len(outputs) > 1 else None
        return scores, frame_scores


def onnx_metadata(path: Path, session=None) -> dict[str, str]:
    """The metadata properties of an .onnx file, read by onnxruntime (no `onnx` package needed).

    `session`: an open session of the file, which holds them already.
    """
    try:
        session = session or onnx_session(path)
    except InferenceError:
        raise
    except Exception as err:
        raise InferenceError(f"cannot read {path} as an ONNX model: {err}") from err
    return dict(session.get_modelmeta().custom_metadata_map)


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session on `threads` threads, run sequentially, idle threads not spinning."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise InferenceError(f"{path} needs onnxruntime: pip install onnxruntime") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads > 1:  # idle pool threads spinning took the core decoding needs: 296x -> 414x
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(WindowModel):
    """An exported `.onnx` graph (fp32 or int8) run by onnxruntime on the CPU."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        try:
            session = onnx_session(path, threads)
        except InferenceError:
            raise
        except Exception as err:
            raise InferenceError(f"cannot read {path} as an ONNX model: {err}") from err
        props = onnx_metadata(path, session)
        if META_KEY not in props:
            raise InferenceError(
                f"{path} has no '{META_KEY}' metadata (classes, front end): only ONNX files "
                "written by `task=export` can be used as models."
            )
        super().__init__(path, json.loads(props[META_KEY]))
        self.session = session
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        frames = np.ascontiguousarray(windows, dtype=np.float32)
        return self._split(self.session.run(self.output_names, {"frames": frames}))


class OpenVinoModel(WindowModel):
    """An OpenVINO IR (`model.xml` + `model.bin`, description in `model.json`) on the CPU."""

    def __init__(self, path: Path, threads: int = 1, precision: str = "f32") -> None:
        xml = path / "model.xml" if path.is_dir() else path
        meta_file = xml.with_name(OPENVINO_META)
        if not xml.is_file() or not meta_file.is_file():
            raise InferenceError(
                f"{path}: an OpenVINO model is a folder with model.xml, model.bin and "
                f"{OPENVINO_META}, as `task=export` writes it."
            )
        try:
            import openvino as ov
        except ImportError as err:
            raise InferenceError(f"{path} needs OpenVINO: pip install openvino") from err
        super().__init__(xml, json.loads(meta_file.read_text()))
        if precision not in OPENVINO_PRECISIONS:
            raise InferenceError(
                f"predict.openvino_precision={precision!r} is not one of {list(OPENVINO_PRECISIONS)}."
            )
        config = {
            "INFERENCE_NUM_THREADS": max(1, int(threads)),
            "NUM_STREAMS": 1,
            # pinned threads of several worker processes would all land on the same cores
            "ENABLE_CPU_PINNING": False,
            # bf16 runs ~3x faster on CPUs with AVX512-BF16/AMX, at ~1e-2 score error
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.core, self.config = ov.Core(), config
        self.graph = self.core.read_model(str(xml))
        self._compiled: dict[int, tuple] = {}  # batch size -> (compiled model, infer request)
        self.name = str(self.meta.get("name") or xml.parent.name)

    def compiled(self, batch: int):
        """The graph compiled for `batch` windows, once per batch size: a static shape runs
        ~10% faster than the dynamic one (B0 int8, 12 windows: 70 against 78 ms) and a
        submission sees one or two batch sizes (12 windows per one-minute file)."""
        if batch not in self._compiled:
            graph = self.graph.clone()
            shape = graph.input(0).get_partial_shape()
            shape[0] = batch
            graph.reshape({graph.input(0): shape})
            compiled = self.core.compile_model(graph, "CPU", self.config)
            self._compiled[batch] = (compiled, compiled.create_infer_request())
        return self._compiled[batch]

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        frames = np.ascontiguousarray(windows, dtype=np.float32)
        compiled, request = self.compiled(len(frames))
        result = request.infer({"frames": frames})
        return self._split([result[out] for out in compiled.outputs])
