"""Pseudo-labelled soundscape windows (task=pseudo_label's pseudo_labels.csv) for training batches.

Each row `<stem>_<end>` of the file is the 5-s window ending at `end` seconds of
`train_soundscapes/<stem>.ogg`, cut from the soundscape cache at read time. Its target is
the teacher's score sharpened by a power (the BirdCLEF 2025 winners' recipe) or, with
`threshold`, made hard (1 where the score reaches it, else 0), mapped to the model's
outputs; windows whose highest class score is below `min_confidence` are dropped, and
with `confidence_weight` each window's loss is weighted by that score (the DataModule
sets the labelled windows' weight to 1, `pseudo_windows(weighted=True)` the pseudo
ones'). Items carry the keys of `birdclef.data.datasets` (primary = -1, as on scored rows).

With `frames` (data.pseudo.frames, an SED teacher's per-frame pseudo-labels stored next to
the rows), a pseudo window is instead cut at a random start at every read, anywhere in its
soundscape, and its target is each class's highest teacher frame inside the window
(`FramePseudoWindows`): new views of the soundscapes with targets that follow the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.rows import ROW_SECONDS, split_row_id
from birdclef.data.cache import CachedFrames
from birdclef.data.datasets import NO_PRIMARY, WindowDataset
from birdclef.data.labels import NULL_CLASS
from birdclef.data.pseudo_store import TEACHER, frames_info, read_frames

PRESENT = 0.5  # a target above this counts as present in the item's truth
SEED_STRIDE = 7_919  # keeps the pseudo draw apart from other draws seeded by `seed`


@dataclass(frozen=True)
class PseudoSpec:
    """`data.pseudo`: pseudo-labelled train_soundscapes windows mixed into training (off: no labels)."""

    labels: str | None = None  # task=pseudo_label's pseudo_labels.csv
    ratio: float = 0.5  # pseudo windows per labelled window
    power: float = 1.0  # targets = score ** power (2 sharpens)
    threshold: float | None = None  # hard targets at this score instead of score ** power
    confidence_weight: bool = False  # each pseudo window's loss x its top score
    min_confidence: float = 0.0  # rows whose highest score is below this are dropped
    redraw: bool = False  # every row kept, each epoch reads ratio x labelled of them anew
    frames: bool = False  # an SED teacher's per-frame labels, a random window per read

    def __post_init__(self) -> None:
        check_pseudo(self.ratio, self.power, self.min_confidence, self.threshold)

    @property
    def active(self) -> bool:
        return self.labels is not None


def check_pseudo(
    ratio: float, power: float, min_confidence: float, threshold: float | None = None
) -> None:
    """Refuse settings that cannot mean anything, before any cache is built."""
    if ratio < 0:
        raise ConfigError(
            f"data.pseudo.ratio={ratio} must be >= 0 (pseudo windows per labelled one)."
        )
    if power <= 0:
        raise ConfigError(
            f"data.pseudo.power={power} must be > 0 (1 keeps the scores, 2 sharpens)."
        )
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"data.pseudo.min_confidence={min_confidence} must be in [0, 1].")
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(
                f"data.pseudo.threshold={threshold} must be in (0, 1] (a score at or above it "
                "is a present class), or null for soft targets."
            )
        if power != 1.0:
            raise ConfigError(
                f"data.pseudo.threshold={threshold} makes hard targets, so data.pseudo.power="
                f"{power} would do nothing: set one of them (power=1 with a threshold)."
            )


def read_pseudo(path: str | Path, classes: list[str], min_confidence: float) -> pd.DataFrame:
    """The rows of `path` (row_id + one column per class) whose best score >= min_confidence.

    Columns come back in `classes` order, with `stem` and `end` split from the row id.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"data.pseudo.labels={path} is not a file; run task=pseudo_label and give its pseudo_labels.csv."
        )
    table = pd.read_csv(path)
    columns = [c for c in table.columns if c != "row_id"]
    if "row_id" not in table.columns or sorted(columns) != sorted(classes):
        missing, extra = sorted(set(classes) - set(columns)), sorted(set(columns) - set(classes))
        raise DataError(
            f"{path} must have row_id and one column per class of the taxonomy; "
            f"missing {missing[:5]}, unknown {extra[:5]}: make it with the same data root."
        )
    scores = table[classes].to_numpy(np.float64)
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise DataError(f"{path} has scores outside [0, 1]; pseudo-labels must be probabilities.")
    try:
        parts = [split_row_id(r) for r in table["row_id"]]
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    table = table.assign(stem=[s for s, _ in parts], end=[e for _, e in parts])
    kept = table[scores.max(axis=1) >= min_confidence].reset_index(drop=True)
    if kept.empty:
        raise DataError(
            f"no row of {path} has a class score >= data.pseudo.min_confidence={min_confidence}; "
            "lower it."
        )
    return kept


def pseudo_targets(
    scores: np.ndarray, power: float, output_names: list[str], activation: str,
    threshold: float | None = None,
) -> np.ndarray:  # fmt: skip
    """Targets p ** power over the model's outputs (with `threshold`: p >= threshold, 0 or 1).

    Sigmoid outputs take them as they are. Softmax outputs are renormalised to sum to
    one; with a `null` output it first gets max(0, 1 - sum of the sharpened scores), so a
    window the teacher hears nothing in trains towards null. Without a null output an
    all-zero row stays all zero (it adds no loss).
    """
    if threshold is None:
        sharp = np.power(scores, power, dtype=np.float64)
    else:
        sharp = (np.asarray(scores) >= threshold).astype(np.float64)
    if activation != "softmax":
        return sharp.astype(np.float32)
    if len(output_names) > sharp.shape[1] and output_names[-1] == NULL_CLASS:
        null = np.maximum(0.0, 1.0 - sharp.sum(axis=1, keepdims=True))
        sharp = np.concatenate([sharp, null], axis=1)
    total = sharp.sum(axis=1, keepdims=True)
    return (sharp / np.where(total > 0, total, 1.0)).astype(np.float32)


class FramePseudoWindows(WindowDataset):
    """Pseudo windows at a random start per read, targeted by an SED teacher's frames.

    `teacher_frames[rec]` is soundscape `rec`'s frame scores [frames, teacher classes]
    (frame k centred at (k + 0.5) * frame_seconds s; memory-mapped), `order` the teacher
    columns of the model's classes. A window's target is, class by class, the highest
    score of the frames centred inside it (all zero past the teacher's last frame),
    sharpened and mapped to the outputs by `pseudo_targets`; truth is target > PRESENT.
    """

    def __init__(
        self, frames: CachedFrames, recording, n_frames: int, finish, teacher_frames: list,
        order: np.ndarray, frame_seconds: float, power: float, output_names: list[str],
        activation: str, threshold: float | None = None,
    ) -> None:  # fmt: skip
        n = len(recording)
        super().__init__(
            frames, recording, np.zeros(n, dtype=np.int64), n_frames, finish, None, None,
            np.full(n, NO_PRIMARY, dtype=np.int64), crop="random",
        )  # fmt: skip
        self.teacher_frames, self.order = teacher_frames, order
        self.frame_seconds = float(frame_seconds)
        self.power, self.output_names, self.activation = power, output_names, activation
        self.threshold = threshold
        self.weighted = False  # True: items carry their window's confidence as `weight`

    def window_scores(self, rec: int, start: int) -> np.ndarray:
        """The teacher's per-class maximum over the frames centred inside the window at `start`."""
        scores = self.teacher_frames[rec]
        frame = self.frames.hop_length / self.frames.sample_rate / self.frame_seconds
        lo, hi = (math.ceil(f * frame - 0.5) for f in (start, start + self.n_frames))
        inside = scores[max(lo, 0) : max(hi, 0)]
        if len(inside) == 0:
            return np.zeros(len(self.order), dtype=np.float64)
        return np.asarray(inside).max(axis=0)[self.order].astype(np.float64)

    def _labels(self, i: int, rec: int, start: int) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Target, truth and, when `weighted`, the window's confidence (its top teacher score)."""
        scores = self.window_scores(rec, start)
        weight = float(scores.max(initial=0.0)) if self.weighted else None
        target = pseudo_targets(
            scores[None], self.power, self.output_names, self.activation, self.threshold
        )[0]
        return target, (target[: len(scores)] > PRESENT).astype(np.float32), weight


def teacher_frames(
    labels: str | Path, stems: list[str], needed: set[str], classes: list[str]
) -> tuple[list, np.ndarray, float]:
    """The SED teacher's per-frame pseudo-labels beside `labels` (a pseudo_labels.csv):
    one memory-mapped array per stem of `stems` that is `needed` (None for the others),
    the teacher column of each of `classes`, and the seconds per frame."""
    folder = Path(labels).parent
    info = frames_info(folder)  # explains a folder without frames
    if sorted(info["classes"]) != sorted(classes):
        raise DataError(
            f"{folder / TEACHER} lists other classes than the data root's taxonomy: "
            "make the pseudo-labels with the same data root."
        )
    order = np.array([info["classes"].index(c) for c in classes], dtype=np.int64)
    arrays = [
        read_frames(folder, stem, info, mmap=True)[0] if stem in needed else None for stem in stems
    ]
    return arrays, order, float(info["frame_seconds"])


def pseudo_windows(
    frames: CachedFrames, rows: pd.DataFrame, classes: list[str], output_names: list[str],
    activation: str, power: float, window_samples: int, finish, count: int, seed: int,
    use_frames: bool = False, labels: str | Path | None = None, threshold: float | None = None,
    weighted: bool = False,
) -> WindowDataset:  # fmt: skip
    """`count` pseudo windows of `window` samples drawn from `rows` (see `read_pseudo`).

    The draw is fixed for the run: a permutation of the rows seeded by `seed`, repeated
    when `count` exceeds them. A window longer or shorter than the 5-s row is centred on
    it, moved to start at 0 when it would begin before the recording (past the end it is
    padded with silence by the cache). With `use_frames` the draw picks the soundscapes
    only: each read cuts a random window of them, targeted by the SED teacher's frames
    stored beside `labels` (`FramePseudoWindows`). With `weighted`, items carry their
    confidence (the highest teacher score of the row, or of the window read) as `weight`.
    """
    missing = sorted(set(rows["stem"]) - set(frames.position))
    if missing:
        raise DataError(
            f"pseudo-label rows name soundscapes that are not readable in train_soundscapes, "
            f"e.g. {missing[:3]}: make the labels from this data root's train_soundscapes."
        )
    rng = np.random.default_rng(seed * SEED_STRIDE)
    order = np.concatenate(
        [rng.permutation(len(rows)) for _ in range(-(-count // len(rows)))] or [[]]
    )[:count].astype(np.int64)
    rows = rows.iloc[order].reset_index(drop=True)
    rate, hop = frames.sample_rate, frames.hop_length
    recording = np.array([frames.position[s] for s in rows["stem"]], dtype=np.int64)
    if use_frames:  # every soundscape of the cache, indexed by its position
        stems = list(frames.index["file"])
        scores, order, seconds = teacher_frames(labels, stems, set(rows["stem"]), classes)
        windows = FramePseudoWindows(
            frames, recording, window_samples // hop, finish, scores, order, seconds, power,
            output_names, activation, threshold,
        )  # fmt: skip
        windows.weighted = weighted
        return windows
    row = ROW_SECONDS * rate
    first = rows["end"].to_numpy(np.int64) * rate - row - (window_samples - row) // 2
    start = np.maximum(first, 0) // hop
    target = pseudo_targets(
        rows[classes].to_numpy(np.float64), power, output_names, activation, threshold
    )
    truth = (target[:, : len(classes)] > PRESENT).astype(np.float32)
    windows = WindowDataset(
        frames, recording, start, window_samples // hop, finish, target, truth,
        np.full(len(rows), NO_PRIMARY, dtype=np.int64),
    )  # fmt: skip
    if weighted:  # each row's top score
        windows.weight = rows[classes].to_numpy(np.float32).max(axis=1)
    return windows
