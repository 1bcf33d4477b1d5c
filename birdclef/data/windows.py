"""The study's 5-second rule and the soundscape row grid, in samples."""

from __future__ import annotations

import numpy as np

SCORE_SECONDS = 5  # s, the competition scores one row per 5-s window of a soundscape


def clip_window_starts(n_samples: int, window: int) -> list[int]:
    """Start samples of the fixed-length windows cut from a labelled clip.

    The rule from the study, for `window` = 5 s:
    - a file shorter than one window gives one window at 0, zero-padded;
    - otherwise whole windows are taken from the start (0-5, 5-10, ...);
    - after them, a leftover of at least half a window (2.5 s) gives one more
      window aligned to the file's end; a shorter leftover is dropped.

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


def grid_window_starts(n_samples: int, window: int) -> list[int]:
    """Start samples of back-to-back windows: 0, window, 2 window, ... (whole windows only).

    For soundscapes: with 5-s windows these are the scored rows (12 for 1 minute). A
    file shorter than one window still gets one (padded) window.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    return [i * window for i in range(max(1, n_samples // window))]


def soundscape_ends(n_samples: int, sample_rate: int, seconds: int = SCORE_SECONDS) -> list[int]:
    """End seconds of the scored windows of a soundscape: 5, 10, ... (12 for 1 minute)."""
    window = seconds * sample_rate
    return [(start + window) // sample_rate for start in grid_window_starts(n_samples, window)]


def row_id(stem: str, end_second: int) -> str:
    """The competition's row id: `<soundscape stem>_<end second>`."""
    return f"{stem}_{int(end_second)}"


def split_row_id(value: str) -> tuple[str, int]:
    """Inverse of `row_id`; the stem may itself contain underscores."""
    stem, _, end = str(value).rpartition("_")
    if not stem or not end.isdigit():
        raise ValueError(f"row_id {value!r} is not of the form <stem>_<end second>")
    return stem, int(end)
