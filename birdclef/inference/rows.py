"""Windows laid onto the scored row grid (`birdclef.core.rows`) and their scores mapped back.

Scoring cuts 5-s windows every `stride_seconds` (`window_starts`) and maps their scores back
to the rows (`rows_from_windows`), a SED net's frames also along the whole file
(`frames_along_file`).
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import InferenceError
from ..core.rows import ROW_SECONDS


def window_starts(n_rows: int, stride_seconds: float) -> np.ndarray:
    """Start seconds of the 5-s windows: every `stride_seconds` from 0 while inside the rows."""
    if not 0 < stride_seconds <= ROW_SECONDS:
        raise InferenceError(
            f"predict.stride_seconds={stride_seconds} must be in (0, {ROW_SECONDS}]: 5 = one "
            "window per row, 2.5 = windows overlapping by half."
        )
    count = max(1, math.ceil(n_rows * ROW_SECONDS / stride_seconds - 1e-9))
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
                max(start, r * ROW_SECONDS),
                min(start + ROW_SECONDS, (r + 1) * ROW_SECONDS),
            )
            if hi - lo <= 1e-9:
                continue
            if frame_scores is None:
                value = scores[w]
            else:
                n = frame_scores.shape[1]
                centres = start + (np.arange(n) + 0.5) * ROW_SECONDS / n
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
    seconds = ROW_SECONDS / n
    slots = np.floor((starts[:, None] + (np.arange(n) + 0.5) * seconds) / seconds).astype(int)
    slots, values = slots.reshape(-1), frame_scores.reshape(n_windows * n, n_classes)
    inside = slots < n_rows * n
    out = np.zeros((n_rows * n, n_classes), dtype=np.float64)
    np.add.at(out, slots[inside], values[inside])
    count = np.bincount(slots[inside], minlength=n_rows * n)[:, None]
    return (out / np.maximum(count, 1)).astype(np.float32), seconds
