"""Another bird model (Google's Perch 2.0, ...) as a teacher: raw audio in, taxonomy columns out.

A *foreign model* is a file this project did not export: an `.onnx` graph without birdclef
metadata or a TensorFlow SavedModel folder, taking raw waveform windows [batch, samples]
float32 and returning logits [batch, model classes] (and possibly other outputs, such as
an embedding). It is described by a JSON file (`"format": FOREIGN_FORMAT`) that
`task=pseudo_label` writes from `teacher.foreign` and that `load_model` reads like any model:

    model           the .onnx file or SavedModel folder (absolute, or relative to the JSON)
    labels          CSV of the model's output class names (scientific names), one a line in
                    output order, first column; a header line is recognised by the count
                    (names = outputs + 1)
    taxonomy        the data root's taxonomy.csv (primary_label, scientific_name)
    sample_rate     Hz the model takes (Perch 2.0: 32000)
    input_seconds  s of audio per model input (Perch 2.0: 5)
    output          name or index of the logits output (SavedModel outputs sorted by name)
    activation      sigmoid | softmax (over all the model's classes) | none (already scores)
    batch_size      windows per model call

Columns are the taxonomy's `primary_label`s in its order. A class's score is the model's
output whose name equals its `scientific_name` (case and spacing ignored; the maximum where
the model lists a name twice). A class the model does not know gets NaN (MISSING): blends
leave the model out for it (`task=pseudo_label`), it is never read as "absent".

Every 5-s row is fitted to the model's input: cut into ceil(5 / input_seconds) evenly
spread inputs whose maximum is taken when the input is shorter, centred in zeros when longer.
TensorFlow is imported only for a SavedModel, after torch (importing it first crashes
torch's triton).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from ..core.activations import activate as core_activate
from ..core.errors import InferenceError
from ..core.rows import ROW_SECONDS
from .backends import META_FORMAT, WindowModel
from .foreign_runners import OnnxRunner, SavedModelRunner

log = logging.getLogger(__name__)

FOREIGN_FORMAT = "birdclef-foreign-model-1"
ACTIVATIONS = ("sigmoid", "softmax", "none")
MISSING = float("nan")  # score of a taxonomy class the foreign model does not know
WAVEFORM = "waveform"  # frame kind: the raw samples, one "frame" per sample
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
DEFAULT_BATCH = 16  # windows per model call
KEYS = ("model", "labels", "taxonomy", "sample_rate", "input_seconds", "output", "activation")


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


def is_foreign(path: str | Path) -> bool:
    """True for a TF SavedModel folder or an .onnx file without this project's metadata."""
    path = Path(path)
    if is_saved_model(path):
        return True
    if path.suffix != ".onnx" or not path.is_file():
        return False
    from .backends import META_KEY, onnx_metadata

    return META_KEY not in onnx_metadata(path)


def describe(model, labels, taxonomy, settings: dict) -> dict:
    """The description of the foreign model `model` (absolute paths; see the module docstring)."""
    return {
        "format": FOREIGN_FORMAT,
        "model": str(Path(model).resolve()),
        "labels": str(Path(labels).resolve()),
        "taxonomy": str(Path(taxonomy).resolve()),
        "sample_rate": int(settings["sample_rate"]),
        "input_seconds": float(settings["input_seconds"]),
        "output": settings["output"],
        "activation": str(settings["activation"]),
        "batch_size": int(settings.get("batch_size", DEFAULT_BATCH)),
    }


def descriptions(models: list[str], labels, taxonomy, settings: dict) -> dict[int, dict]:
    """The description of every foreign model among `models` (by index), from `teacher.foreign`."""
    found = {i: m for i, m in enumerate(models) if is_foreign(m)}
    if not found:
        return {}
    if not labels:
        raise InferenceError(
            f"teacher.models {list(found.values())} are not models of this project (an .onnx "
            "without birdclef metadata or a TF SavedModel): describe them with "
            "teacher.foreign.labels=<csv of their class names> (and sample_rate, input_seconds, "
            "output, activation), or export the project model with task=export."
        )
    if not Path(labels).is_file():
        raise InferenceError(f"teacher.foreign.labels={labels} is not a file.")
    if settings["activation"] not in ACTIVATIONS:
        raise InferenceError(
            f"teacher.foreign.activation={settings['activation']!r} must be one of {list(ACTIVATIONS)}."
        )
    return {i: describe(m, labels, taxonomy, settings) for i, m in found.items()}


def write_descriptions(folder: Path, foreign: dict[int, dict], models: list[str]) -> list[str]:
    """`models` with each foreign one replaced by its description's path, written to `folder`."""
    models = list(models)
    for i, desc in foreign.items():
        path = Path(folder) / f"{i}_{Path(desc['model']).stem}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(desc, indent=1))
        tmp.replace(path)  # atomic: a concurrent shard never reads half a description
        models[i] = str(path)
    return models


def normalise(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def read_names(path: Path) -> list[str]:
    """The first column of every non-empty line of a labels CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            names = [row[0].strip() for row in csv.reader(fh) if row and row[0].strip()]
    except OSError as err:
        raise InferenceError(f"teacher.foreign.labels={path} cannot be read: {err}") from err
    if not names:
        raise InferenceError(f"teacher.foreign.labels={path} lists no class names.")
    return names


def read_taxonomy(path: Path) -> tuple[list[str], list[str]]:
    """(primary_label, scientific_name) columns of a taxonomy.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise InferenceError(f"taxonomy {path} cannot be read: {err}") from err
    if not rows or not {"primary_label", "scientific_name"} <= set(rows[0]):
        raise InferenceError(
            f"{path} needs primary_label and scientific_name columns to map a foreign model's "
            "classes by scientific name."
        )
    return [r["primary_label"] for r in rows], [r["scientific_name"] for r in rows]


def class_index(scientific: list[str], names: list[str]) -> list[list[int]]:
    """For each taxonomy class, the output columns (of `names`) that carry its scientific name."""
    where: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        where.setdefault(normalise(name), []).append(i)
    return [where.get(normalise(s), []) for s in scientific]


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from the model's outputs; `none`: the outputs are already scores."""
    return logits.astype(np.float64) if activation == "none" else core_activate(logits, activation)


def fit_windows(x: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Row windows [B, m] -> model windows [B * k, n] and k (windows per row, max-pooled after)."""
    batch, m = x.shape
    if n >= m:
        out = np.zeros((batch, n), dtype=np.float32)
        left = (n - m) // 2
        out[:, left : left + m] = x
        return out, 1
    k = math.ceil(m / n)
    starts = np.linspace(0, m - n, k).round().astype(int)
    return np.stack([x[:, s : s + n] for s in starts], axis=1).reshape(batch * k, n), k


def read_description(path: Path) -> dict:
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InferenceError(f"cannot read {path} as a foreign model description: {err}") from err
    if desc.get("format") != FOREIGN_FORMAT or not set(KEYS) <= set(desc):
        raise InferenceError(
            f"{path} is not a foreign model description ({FOREIGN_FORMAT} with {list(KEYS)})."
        )
    if desc["activation"] not in ACTIVATIONS:
        raise InferenceError(
            f"teacher.foreign.activation={desc['activation']!r} must be one of {list(ACTIVATIONS)}."
        )
    for key in ("model", "labels", "taxonomy"):
        desc[key] = str((path.parent / desc[key]).resolve())  # absolute paths stay as they are
    return desc


class ForeignModel(WindowModel):
    """A foreign model under the WindowModel contract (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        path = Path(path)
        desc = read_description(path)
        model = Path(desc["model"])
        classes, scientific = read_taxonomy(Path(desc["taxonomy"]))
        self.names = read_names(Path(desc["labels"]))
        self.index = class_index(scientific, self.names)
        rate = int(desc["sample_rate"])
        if rate <= 0 or float(desc["input_seconds"]) <= 0:
            raise InferenceError(f"{path}: sample_rate and input_seconds must be positive.")
        meta = {
            "format": META_FORMAT,
            "name": model.stem if model.suffix else model.name,
            "classes": classes,
            "frame_params": {"kind": WAVEFORM, "sample_rate": rate, "hop_length": 1},
            "window_frames": ROW_SECONDS * rate,
            "pad_value": 0.0,
            "outputs": ["scores"],
            "activation": desc["activation"],
            "source": str(model),
        }
        super().__init__(path, meta)
        self.activation, self.batch_size = (
            desc["activation"],
            max(1, int(desc.get("batch_size", DEFAULT_BATCH))),
        )
        self.model_samples = round(float(desc["input_seconds"]) * rate)
        if is_saved_model(model):
            self.runner = SavedModelRunner(model, threads)
        elif model.suffix == ".onnx" and model.is_file():
            self.runner = OnnxRunner(model, threads)
        else:
            raise InferenceError(
                f"foreign model {model}: give an .onnx file or a SavedModel folder."
            )
        self.output = self._output_name(desc["output"])
        self.missing = [c for c, cols in zip(classes, self.index, strict=True) if not cols]
        log.info("%s: %d of %d taxonomy classes found among its %d labels; %d missing (NaN)",
                 self.name, len(classes) - len(self.missing), len(classes), len(self.names),
                 len(self.missing))  # fmt: skip

    def _output_name(self, output) -> str:
        names = self.runner.outputs
        if isinstance(output, int) or str(output).lstrip("-").isdigit():
            i = int(output)
            if not -len(names) <= i < len(names):
                raise InferenceError(f"teacher.foreign.output={i}: the model has outputs {names}.")
            return names[i]
        if output not in names:
            raise InferenceError(
                f"teacher.foreign.output={output!r}: the model has outputs {names}."
            )
        return str(output)

    def frames(self, wave: np.ndarray) -> np.ndarray:
        return np.asarray(wave, dtype=np.float32)[:, None]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The model's chosen output for windows [N, samples], batch_size windows per call."""
        parts = [
            np.asarray(self.runner(x[i : i + self.batch_size], self.output), dtype=np.float32)
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(parts)

    def map_columns(self, scores: np.ndarray) -> np.ndarray:
        """Model scores [N, model classes] -> [N, taxonomy classes], NaN where unknown."""
        offset = scores.shape[1] - len(self.names)  # -1: the labels CSV has a header line
        if offset not in (0, -1):
            raise InferenceError(
                f"{self.name} outputs {scores.shape[1]} classes but teacher.foreign.labels lists "
                f"{len(self.names)} names: give the model's own label file."
            )
        out = np.full((len(scores), len(self.index)), MISSING, dtype=np.float64)
        for c, cols in enumerate(self.index):
            cols = [i + offset for i in cols if i + offset >= 0]
            if cols:
                out[:, c] = scores[:, cols].max(axis=1)
        return out

    def predict(self, windows: np.ndarray) -> tuple[np.ndarray, None]:
        x = np.ascontiguousarray(np.asarray(windows, dtype=np.float32)[:, 0, :])
        fitted, k = fit_windows(x, self.model_samples)
        mapped = self.map_columns(activate(self.logits(fitted), self.activation))
        mapped = mapped.reshape(len(x), k, -1).max(axis=1)
        return mapped.astype(np.float32), None
