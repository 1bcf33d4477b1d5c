"""Where windows lie in a recording: the study's 5-second rule and the soundscape row grid, in samples."""

from __future__ import annotations

import math

import numpy as np

SCORE_SECONDS = 5  # s, the competition scores one row per 5-s window of a soundscape
ROW_TOLERANCE_SECONDS = 0.1  # s, a last window starting less than this before the end is no row


def recording_window_starts(n_samples: int, window: int) -> list[int]:
    """Start samples of the fixed windows cut from a labelled recording.

    The rule from the study, for `window` = 5 s:
    - a recording shorter than one window gives one window at 0, zero-padded;
    - otherwise whole windows are taken from the start (0-5, 5-10, ...);
    - after them, a leftover of at least half a window (2.5 s) gives one more
      window aligned to the recording's end; a shorter leftover is dropped.

    So 3 s -> [0-5 padded], 8 s -> [0-5, 3-8], 12.4 s -> [0-5, 5-10],
    12.6 s -> [0-5, 5-10, 7.6-12.6].
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if n_samples <= window:
        return [0]
    whole = n_samples // window
    starts = [i * window for i in range(whole)]
    leftover = n_samples - whole * window
    if 2 * leftover >= window:
        starts.append(n_samples - window)
    return starts


def cut_window(audio: np.ndarray, start: int, window: int) -> np.ndarray:
    """`audio[start:start+window]`, zero-padded at the end to exactly `window` samples."""
    piece = audio[max(start, 0) : start + window]
    if len(piece) == window:
        return piece
    out = np.zeros(window, dtype=audio.dtype)
    out[: len(piece)] = piece
    return out


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
