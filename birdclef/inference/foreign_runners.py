"""How a foreign model (birdclef.inference.foreign) is run: an .onnx graph or a TF SavedModel.

TensorFlow is imported only for a SavedModel, after torch and triton where they exist
(importing it first crashes torch's triton).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..core.errors import InferenceError

SIGNATURE = "serving_default"  # the SavedModel signature a foreign model is called through


def import_tensorflow(threads: int):
    """TensorFlow on `threads` threads, imported after torch (and triton) where they exist."""
    for name in ("torch", "triton"):
        with contextlib.suppress(ImportError):
            __import__(name)
    try:
        import tensorflow as tf
    except ImportError as err:
        raise InferenceError(
            "a SavedModel teacher needs tensorflow: pip install tensorflow"
        ) from err
    with contextlib.suppress(RuntimeError):  # already set once in this process
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


class OnnxRunner:
    """A foreign .onnx graph: its first input takes the windows; outputs by name, in graph order."""

    def __init__(self, path: Path, threads: int) -> None:
        from .backends import onnx_session

        self.session = onnx_session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray, output: str) -> np.ndarray:
        return self.session.run([output], {self.input: x})[0]


class SavedModelRunner:
    """A TF SavedModel's `serving_default` signature: one input, outputs sorted by name."""

    def __init__(self, path: Path, threads: int) -> None:
        tf = import_tensorflow(threads)
        self.tf, self.loaded = tf, tf.saved_model.load(str(path))
        if SIGNATURE not in self.loaded.signatures:
            raise InferenceError(
                f"{path} has no '{SIGNATURE}' signature (it has {list(self.loaded.signatures)})."
            )
        self.fn = self.loaded.signatures[SIGNATURE]
        inputs = list(self.fn.structured_input_signature[1])
        if len(inputs) != 1:
            raise InferenceError(f"{path}: the signature takes {inputs}, not one waveform input.")
        self.input = inputs[0]
        self.outputs = sorted(self.fn.structured_outputs)

    def __call__(self, x: np.ndarray, output: str) -> np.ndarray:
        return self.fn(**{self.input: self.tf.constant(x)})[output].numpy()
