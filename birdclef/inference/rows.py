"""The scored row grid of a soundscape (every started 5 s is a row) and windows laid onto it.

Rows are named `<stem>_<end second>`. Scoring cuts 5-s windows every `stride_seconds`
(`window_starts`) and maps their scores back to the rows (`rows_from_windows`), a SED net's
frames also along the whole file (`frames_along_file`).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InferenceError

SCORE_SECONDS = 5  # s, the competition scores one row per 5-s window of a soundscape
ROW_TOLERANCE_SECONDS = 0.1  # s, a last window starting less than this before the end is no row


def grid_window_starts(n_samples: int, window: int, sample_rate: int | None = None) -> list[int]:
    """Start samples of back-to-back windows 0, window, 2 window, ...: the scored rows.

    Every started window is a row, the last one zero-padded, so a soundscape a few
    samples short of 60 s still has 12 rows. A window that would start less than
    `ROW_TOLERANCE_SECONDS` before the end (a file a few samples *over* 60 s) is
    not a row. A file shorter than one window still gets one.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    tolerance = int(ROW_TOLERANCE_SECONDS * sample_rate) if sample_rate else 0
    count = max(1, math.ceil(max(n_samples - tolerance, 0) / window))
    return [i * window for i in range(count)]


def soundscape_ends(n_samples: int, sample_rate: int, seconds: int = SCORE_SECONDS) -> list[int]:
    """End seconds of the scored rows of a soundscape: 5, 10, ... (12 for 1 minute)."""
    window = seconds * sample_rate
    return [
        (start + window) // sample_rate
        for start in grid_window_starts(n_samples, window, sample_rate)
    ]


def row_id(stem: str, end_second: int) -> str:
    """The competition's row id: `<soundscape stem>_<end second>`."""
    return f"{stem}_{int(end_second)}"


def split_row_id(value: str) -> tuple[str, int]:
    """Inverse of `row_id`; the stem may itself contain underscores."""
    stem, _, end = str(value).rpartition("_")
    if not stem or not end.isdigit():
        raise ValueError(f"row_id {value!r} is not of the form <stem>_<end second>")
    return stem, int(end)


def window_starts(n_rows: int, stride_seconds: float) -> np.ndarray:
    """Start seconds of the 5-s windows: every `stride_seconds` from 0 while inside the rows."""
    if not 0 < stride_seconds <= SCORE_SECONDS:
        raise InferenceError(
            f"predict.stride_seconds={stride_seconds} must be in (0, {SCORE_SECONDS}]: 5 = one "
            "window per row, 2.5 = windows overlapping by half."
        )
    count = max(1, math.ceil(n_rows * SCORE_SECONDS / stride_seconds - 1e-9))
    return np.arange(count) * float(stride_seconds)


def rows_from_windows(
    scores: np.ndarray, frame_scores: np.ndarray | None, starts: np.ndarray, n_rows: int
) -> np.ndarray:
    """Window scores -> row scores [n_rows, classes], each row the overlap-weighted mean.

    With frame scores (SED nets), a window's contribution to a row is the maximum of its
    frames that lie inside the row, rather than its whole-window score.
    """
    out = np.zeros((n_rows, scores.shape[1]), dtype=np.float64)
    weight = np.zeros((n_rows, 1))
    for w, start in enumerate(starts):
        for r in range(n_rows):
            lo, hi = (
                max(start, r * SCORE_SECONDS),
                min(start + SCORE_SECONDS, (r + 1) * SCORE_SECONDS),
            )
            if hi - lo <= 1e-9:
                continue
            if frame_scores is None:
                value = scores[w]
            else:
                n = frame_scores.shape[1]
                centres = start + (np.arange(n) + 0.5) * SCORE_SECONDS / n
                inside = (centres >= lo) & (centres < hi)
                value = frame_scores[w][inside].max(axis=0) if inside.any() else scores[w]
            out[r] += (hi - lo) * value
            weight[r] += hi - lo
    return (out / weight).astype(np.float32)


def frames_along_file(
    frame_scores: np.ndarray, starts: np.ndarray, n_rows: int
) -> tuple[np.ndarray, float]:
    """A SED net's window frames [windows, n, classes] -> the file's frames [n_rows * n, classes].

    Frame `k` of the file spans `[k, k + 1) * 5 / n` s, so the frames tile the rows and row
    `r` owns frames `r * n` to `(r + 1) * n`. A window frame goes to the file frame holding
    its centre; where windows overlap (stride below 5 s) the frames landing on one file frame
    are averaged, the rule `rows_from_windows` applies to whole windows. With the 5-s stride
    the windows are the rows, so this is their frames one after another. Frames past the
    last row (the end of a window that runs over it) are dropped.
    Returns the frames and the seconds one frame spans (`5 / n`).
    """
    n_windows, n, n_classes = frame_scores.shape
    seconds = SCORE_SECONDS / n
    slots = np.floor((starts[:, None] + (np.arange(n) + 0.5) * seconds) / seconds).astype(int)
    slots, values = slots.reshape(-1), frame_scores.reshape(n_windows * n, n_classes)
    inside = slots < n_rows * n
    out = np.zeros((n_rows * n, n_classes), dtype=np.float64)
    np.add.at(out, slots[inside], values[inside])
    count = np.bincount(slots[inside], minlength=n_rows * n)[:, None]
    return (out / np.maximum(count, 1)).astype(np.float32), seconds
