"""What the DataModule calls: the training side's windows before and after a filter, and its report."""

from __future__ import annotations

import logging

import pandas as pd

from birdclef.data.curation.manifest import window_spans
from birdclef.data.curation.window_filter import filter_report
from birdclef.data.filters import NoFilter

log = logging.getLogger(__name__)

REPORT_NAME = "filter_report.csv"


def recording_windows(frames, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per 5-s window of each recording of `rows` (train.csv rows), in cache order.

    Columns: file, primary_label, window, start, end (samples at the cache's rate).
    """
    meta = rows.drop_duplicates("filename")
    out = []
    for key, label in zip(meta["filename"], meta["primary_label"], strict=True):
        n = int(frames.index["n_samples"].iat[frames.position[key]])
        for i, (a, b) in enumerate(window_spans(n, frames.sample_rate)):
            out.append((key, label, i, a, b))
    return pd.DataFrame(out, columns=["file", "primary_label", "window", "start", "end"])


def apply_filter(
    train_filter, frames, before_rows: pd.DataFrame, after_rows: pd.DataFrame, manifests
):
    """(kept windows or None, per-class report) of the training side.

    `after_rows` are the rows the filter kept; a window filter (one with `select`)
    then picks windows of them from `manifests()` (called only for such a filter),
    and training draws only from those. For row filters the result is None: every
    window of a kept recording trains, as before. task=train writes the report into
    the run folder as `REPORT_NAME`.
    """
    if isinstance(train_filter, NoFilter):  # filter=none: nothing filtered, nothing to report
        return None, None
    before = recording_windows(frames, before_rows)
    after = before[before["file"].isin(set(after_rows["filename"]))]
    kept = None
    if hasattr(train_filter, "select"):
        kept = after = train_filter.select(after, manifests())
    if kept is None:
        by_rows, by_windows = getattr(train_filter, "rescued", {}), {}
    else:
        by_rows = train_filter.rating.rescued if train_filter.rating is not None else {}
        by_windows = train_filter.rescued
    report = filter_report(before, after, frames.sample_rate, by_rows, by_windows)
    total = report.iloc[-1]
    log.info(
        "filter %s: kept %d of %d training windows (%.1f of %.1f min, %.1f%% removed); "
        "rescued classes: %s", type(train_filter).__name__, total["windows_after"],
        total["windows_before"], total["seconds_after"] / 60, total["seconds_before"] / 60,
        100 * total["share_removed"],
        sorted({*by_rows, *by_windows}) or "none",
    )  # fmt: skip
    return kept, report
