"""`load_model`: any model file the project runs, by its kind (ONNX, OpenVINO, checkpoint, foreign).

The backends that need more than numpy (torch for checkpoints, TensorFlow for foreign
SavedModels) are imported only when such a model is loaded, so a bundle, which leaves
them out, still loads ONNX and OpenVINO models.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InferenceError
from .backends import OnnxModel, OpenVinoModel


def load_model(path: str | os.PathLike, threads: int = 1, openvino_precision: str = "f32"):
    """The model at `path`: `.onnx`, an OpenVINO folder or `.xml`, a project `.ckpt`, or the
    `.json` description of a foreign model (Perch, ...)."""
    path = Path(path)
    if not path.exists():
        raise InferenceError(f"model not found: {path}")
    if path.suffix == ".onnx":
        return OnnxModel(path, threads)
    if path.suffix == ".xml" or (path.is_dir() and (path / "model.xml").is_file()):
        return OpenVinoModel(path, threads, openvino_precision)
    if path.suffix == ".json":  # a foreign model's description (birdclef.inference.foreign)
        try:
            from .foreign import ForeignModel  # teachers only: left out of a bundle
        except ImportError as err:
            raise InferenceError(
                f"{path} describes a foreign model (a teacher), which needs the birdclef project."
            ) from err
        return ForeignModel(path, threads)
    if path.suffix == ".ckpt":
        try:
            from .torch_backend import TorchModel
        except ImportError as err:
            raise InferenceError(
                f"{path} is a training checkpoint, which needs the birdclef project and torch; "
                "export it (`task=export`) to run it without them."
            ) from err
        return TorchModel(path, threads)
    raise InferenceError(
        f"{path} is not a model this project can run: give a .ckpt checkpoint, an exported "
        ".onnx file or an OpenVINO folder (model.xml)."
    )
