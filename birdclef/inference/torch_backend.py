"""Project checkpoints as submission models, and the window graph that `task=export` exports.

Needs torch and the project (nets, front ends, losses), never Lightning: a checkpoint's
plain hyper-parameters rebuild the net, its state dict fills it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from ..core.activations import activate
from ..core.errors import InferenceError
from ..core.rows import ROW_SECONDS
from .backends import META_FORMAT, WindowModel
from .features import MEL_KINDS


class WindowGraph(nn.Module):
    """Raw frames of windows [B, features, n] -> scores [B, classes] (+ frame scores for SED).

    The per-window front-end step (`frontend.finish`: the top-dB floor, the MFCC's DCT),
    the net and the activation, with the `null` output dropped: everything after the
    frames, so that the frames are computed once per file and shared between models.
    """

    def __init__(self, frontend: nn.Module, net: nn.Module, activation: str, n_classes: int):
        super().__init__()
        self.frontend, self.net = frontend, net
        self.activation, self.n_classes = activation, n_classes

    def forward(self, frames: torch.Tensor):
        outputs = self.net(self.frontend.finish(frames).unsqueeze(1))
        if isinstance(outputs, dict):
            scores = activate(outputs["logits"], self.activation)[:, : self.n_classes]
            frame_logits = outputs.get("frame_logits")
            if frame_logits is not None:
                return scores, activate(frame_logits, self.activation)[..., : self.n_classes]
            return scores
        return activate(outputs, self.activation)[:, : self.n_classes]


def load_checkpoint(path: str | os.PathLike) -> tuple[WindowGraph, dict]:
    """The window graph of a project checkpoint, in eval mode, and its description."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        hp = state["hyper_parameters"]
        classes, outputs = list(hp["classes"]), list(hp["output_names"])
    except Exception as err:
        raise InferenceError(
            f"cannot read {path} as a birdclef checkpoint ({type(err).__name__}: {err}); give "
            "a best.ckpt / last.ckpt written by `python run.py` (task=train)."
        ) from err
    if hp.get("frontend") is None:
        raise InferenceError(f"{path} does not record its front end; retrain with this version.")
    frontend = instantiate(hp["frontend"])
    net = instantiate(hp["net"], num_classes=len(outputs))
    weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(weights)
    activation = instantiate(hp["loss"]).activation
    graph = WindowGraph(frontend, net, activation, len(classes)).eval()
    hop = int(frontend.hop_length)
    window_frames = ROW_SECONDS * int(frontend.sample_rate) // hop
    meta = {
        "format": META_FORMAT,
        "name": path.parent.parent.name if path.parent.name == "checkpoints" else path.stem,
        "classes": classes,
        "frame_params": frontend.frame_params(),
        "window_frames": window_frames,
        "pad_value": float(frontend.pad_value),
        "outputs": ["scores", "frame_scores"]
        if _has_frame_scores(graph, window_frames)
        else ["scores"],
        "activation": activation,
        "source": str(path),
        # what a distillation teacher needs (birdclef.modules.exported_teacher): the outputs
        # before the `null` one is dropped, and what the per-window step depends on
        "output_names": outputs,
        "frontend_params": frontend.params(),
    }
    return graph, meta


def _has_frame_scores(graph: WindowGraph, window_frames: int) -> bool:
    probe = torch.full(
        (1, graph.frontend.n_features, window_frames), float(graph.frontend.pad_value)
    )
    try:
        with torch.inference_mode():
            return isinstance(graph(probe), tuple)
    except Exception:  # nets with a fixed input size: judged on real input instead
        return False


class TorchModel(WindowModel):
    """A `.ckpt` of this project, run by torch eager on the CPU (the slowest backend)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.graph, meta = load_checkpoint(path)
        super().__init__(path, meta)
        self.threads = max(1, int(threads))
        if self.frame_params.get("kind") not in MEL_KINDS:
            self._frames = None

    def frames(self, wave: np.ndarray) -> np.ndarray:
        if self._frames is not None:  # log-mel: the same numpy frames as exported models
            return self._frames(wave)
        return self.graph.frontend.frames(wave).numpy()  # e.g. BirdNET embeddings

    @torch.inference_mode()
    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        out = self.graph(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)))
        if isinstance(out, tuple):
            return self._split([o.numpy() for o in out])
        return self._split([out.numpy()])
