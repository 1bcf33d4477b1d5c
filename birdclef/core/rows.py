"""The scored row grid of a soundscape: one row per 5 s, named `<stem>_<end second>`.

`ROW_SECONDS` is the one place the competition's 5 s is written; everything that cuts,
names or counts rows derives from it.
"""

from __future__ import annotations

import math

ROW_SECONDS = 5  # s, the competition scores one row per 5-s window of a soundscape
SOUNDSCAPE_SECONDS = 60  # s, a test soundscape
SOUNDSCAPE_ROWS = SOUNDSCAPE_SECONDS // ROW_SECONDS  # rows of one test soundscape (12)
ROW_TOLERANCE_SECONDS = 0.1  # s, a last window starting less than this before the end is no row


def grid_window_starts(
    n_samples: int, window_samples: int, sample_rate: int | None = None
) -> list[int]:
    """Start samples of back-to-back windows 0, window, 2 window, ...: the scored rows.

    Every started window is a row, the last one zero-padded, so a soundscape a few
    samples short of 60 s still has 12 rows. A window that would start less than
    `ROW_TOLERANCE_SECONDS` before the end (a file a few samples *over* 60 s) is
    not a row. A file shorter than one window still gets one.
    """
    if window_samples <= 0:
        raise ValueError(f"window_samples must be positive, got {window_samples}")
    tolerance = int(ROW_TOLERANCE_SECONDS * sample_rate) if sample_rate else 0
    count = max(1, math.ceil(max(n_samples - tolerance, 0) / window_samples))
    return [i * window_samples for i in range(count)]


def soundscape_ends(n_samples: int, sample_rate: int, seconds: int = ROW_SECONDS) -> list[int]:
    """End seconds of the scored rows of a soundscape: 5, 10, ... (12 for 1 minute)."""
    window_samples = seconds * sample_rate
    return [
        (start + window_samples) // sample_rate
        for start in grid_window_starts(n_samples, window_samples, sample_rate)
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
