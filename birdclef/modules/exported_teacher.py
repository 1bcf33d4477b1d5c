"""An exported log-mel model (ONNX / OpenVINO, from `task=export`) as a distillation teacher.

`ExportedTeacher` gives `birdclef.modules.distill.Distiller` what it uses of a teacher:
`classes`, `output_names`, `activation`, `eval()`, `requires_grad_()`, `to(device)` and
a call mapping the batch's `teacher_features` [B, 1, features, n] to logits [B, outputs].
The graph runs on the CPU (numpy, `threads` threads) and outputs scores in [0, 1], which
are turned back into logits so the Distiller can apply its temperature to them:

- sigmoid teacher: logit(p), p clamped to [float32 tiny, 1 - float32 epsneg] (a float32
  sigmoid saturates to exactly 1 above a logit of ~16.6, so larger logits read as ~16.6);
- softmax teacher: log(p). Its graph drops the `null` output, so its scores cover the
  scored classes only. When the export records the checkpoint's `output_names` (exports
  of this version), a `null` column is put back from the leftover mass, 1 - sum(p), and
  the teacher's targets at any temperature are its checkpoint's. Older exports: no `null`
  column, so the temperature-softened scores are renormalised over the scored classes
  (at T = 1, p / sum(p)).

Input: the exported graph takes the raw dB frames of a window and applies its own
per-window step (`finish`: the top-dB floor, an MFCC's DCT). The top-dB floor is
idempotent (flooring floored frames at the same top_db changes nothing), so a
`MelFrontend` model whose export records its front end (`frontend_params`) reads the
features of that front end, the same as its checkpoint reads. Other exports (MFCC
models, whose DCT must not be applied twice, and older exports) read the raw dB frames:
their front end is a `MelFrontend` with `top_db=None`, whose `finish` does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from birdclef.core.errors import ConfigError, InferenceError
from birdclef.data.frontend import MelFrontend
from birdclef.inference.backends import META_KEY, OPENVINO_META, onnx_metadata
from birdclef.inference.features import MEL_KINDS
from birdclef.inference.loading import load_model

LOW = float(np.finfo(np.float32).tiny)  # smallest score read as a probability
HIGH = 1.0 - float(np.finfo(np.float32).epsneg)  # largest float32 score below 1
ACTIVATIONS = ("sigmoid", "softmax")
NULL = "null"  # the checkpoint output a softmax export drops
EXPORT_HINT = (
    "export the checkpoint with `python run.py task=export task.model=<run>/checkpoints/best.ckpt`"
)


def is_exported(path: Path) -> bool:
    """True for the paths `task=distill` reads as exported models (.onnx, OpenVINO)."""
    return path.suffix in (".onnx", ".xml") or (path / "model.xml").is_file()


def description(path: Path) -> dict:
    """The birdclef description of an exported model, without loading its graph."""
    try:
        if path.suffix == ".onnx":
            props = onnx_metadata(path)
            if META_KEY not in props:
                raise ConfigError(
                    f"teacher {path} has no '{META_KEY}' metadata, so task=export did not write "
                    f"it: {EXPORT_HINT} and give its model_fp32.onnx. A model of another project "
                    "(Perch, ...) cannot teach task=distill: it teaches through task=pseudo_label "
                    "(teacher.foreign) and data.pseudo.labels."
                )
            return json.loads(props[META_KEY])
        xml = path if path.suffix == ".xml" else path / "model.xml"
        return json.loads(xml.with_name(OPENVINO_META).read_text())
    except (InferenceError, OSError, ValueError) as err:
        raise ConfigError(
            f"teacher {path} cannot be read as an exported model ({err}); {EXPORT_HINT}."
        ) from err


def run_folders(path: Path) -> list[Path]:
    """Where an exported model's run files (split.csv, metrics.json) are looked for, in order.

    The export's own folder (the folder holding the .onnx file or the `openvino` folder,
    `task.output`), where they can be copied, then the run folder of the checkpoint it was
    exported from (its description's `source`, relative paths to the current folder).
    """
    folder = path.parent.parent if path.suffix == ".xml" else path.parent
    source = description(path).get("source")
    return [folder] + ([Path(source).parent.parent] if source else [])


class ExportedTeacher:
    """An exported model's scores as teacher logits (see the module doc)."""

    def __init__(self, model) -> None:
        self.model, self.path = model, Path(model.path)
        meta = model.meta
        self.activation = meta.get("activation")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"teacher {self.path} does not record its activation ({self.activation!r}, expected "
                f"one of {list(ACTIVATIONS)}); {EXPORT_HINT} again."
            )
        self.classes = list(model.classes)
        recorded = list(meta.get("output_names") or self.classes)
        self.has_null = self.activation == "softmax" and NULL in recorded
        self.output_names = self.classes + [NULL] if self.has_null else list(self.classes)
        self.window_frames = int(model.window_frames)
        self.frontend_params = self.frontend().params()  # checked here, once

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> ExportedTeacher:
        """The exported model at `path` (.onnx, OpenVINO folder or .xml), checked."""
        kind = description(path).get("frame_params", {}).get("kind")
        if kind not in MEL_KINDS:
            raise ConfigError(
                f"teacher {path} reads {kind!r} frames, not {list(MEL_KINDS)}: only exported "
                "log-mel models can teach; give the model's .ckpt instead."
            )
        try:
            return cls(load_model(path, threads))
        except InferenceError as err:
            raise ConfigError(f"teacher {path}: {err}") from err

    def frontend(self) -> MelFrontend:
        """The front end whose `finish`ed frames this teacher reads (`teacher_features`)."""
        p, recorded = self.model.frame_params, self.model.meta.get("frontend_params") or {}
        reads_own = recorded.get("kind") == MelFrontend.__name__
        try:
            frontend = MelFrontend(
                int(p["sample_rate"]), n_mels=int(p["n_mels"]), n_fft=int(p["n_fft"]),
                hop_length=int(p["hop_length"]), f_min=float(p["f_min"]), f_max=float(p["f_max"]),
                top_db=recorded.get("top_db") if reads_own else None,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"teacher {self.path}: incomplete frame_params {p} ({err}); {EXPORT_HINT} again."
            ) from err
        if frontend.frame_params() != p or (reads_own and frontend.params() != recorded):
            raise ConfigError(
                f"teacher {self.path} reads frames {p} (front end {recorded or 'unrecorded'}) that "
                f"this version's MelFrontend does not compute ({frontend.params()}); {EXPORT_HINT} again."
            )
        return frontend

    def eval(self) -> ExportedTeacher:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> ExportedTeacher:
        return self

    def to(self, *args, **kwargs) -> ExportedTeacher:
        return self  # the graph runs on the CPU; outputs follow the input's device

    def logits(self, scores: np.ndarray) -> np.ndarray:
        """Scores [B, classes] in [0, 1] -> logits [B, outputs] (see the module doc)."""
        p = np.asarray(scores, dtype=np.float64)
        if self.activation == "sigmoid":
            p = p.clip(LOW, HIGH)
            return np.log(p) - np.log1p(-p)
        if self.has_null:
            p = np.concatenate([p, 1.0 - p.sum(axis=1, keepdims=True)], axis=1)
        return np.log(p.clip(LOW, None))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """`teacher_features` [B, 1, features, n] (or [B, features, n]) -> logits [B, outputs]."""
        windows = features.squeeze(1) if features.dim() == 4 else features
        if windows.shape[-1] != self.window_frames:
            raise ConfigError(
                f"teacher {self.path} takes windows of {self.window_frames} frames, given "
                f"{windows.shape[-1]}: distil with the window length it was exported with."
            )
        scores, _ = self.model.predict(windows.detach().float().cpu().numpy())
        return torch.from_numpy(self.logits(scores)).float().to(features.device)
