"""The scored row grid of a soundscape: one row per 5 s, named `<stem>_<end second>`.

`ROW_SECONDS` is the one place the competition's 5 s is written; everything that cuts,
names or counts rows derives from it.
"""

from __future__ import annotations

ROW_SECONDS = 5  # s, the competition scores one row per 5-s window of a soundscape
SOUNDSCAPE_SECONDS = 60  # s, a test soundscape
SOUNDSCAPE_ROWS = SOUNDSCAPE_SECONDS // ROW_SECONDS  # rows of one test soundscape (12)
ROW_TOLERANCE_SECONDS = 0.1  # s, a last window this much short of whole still counts as a row


def grid_window_starts(
    n_samples: int, window_samples: int, sample_rate: int | None = None
) -> list[int]:
    """Start samples of back-to-back windows 0, window, 2 window, ...: the scored rows.

    Every whole window is a row, as in the solution files the competition scores against:
    a 60-s soundscape has 12 rows, a 64-s file 12 and a 12.4-s file 2 (the 2.4 s after the
    last whole window is no row). A last window at most `ROW_TOLERANCE_SECONDS` short of
    whole still counts (a soundscape a few samples short of 60 s has 12 rows, its last one
    zero-padded), and a file shorter than one window gets one padded row.
    """
    if window_samples <= 0:
        raise ValueError(f"window_samples must be positive, got {window_samples}")
    tolerance = int(ROW_TOLERANCE_SECONDS * sample_rate) if sample_rate else 0
    count = max(1, (n_samples + tolerance) // window_samples)
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
