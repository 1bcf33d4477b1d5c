"""What the DataModule calls: the training side's segments before and after a filter, and its report."""

from __future__ import annotations

import logging

import pandas as pd

from birdclef.data.curation.manifest import segment_spans
from birdclef.data.curation.segment_filter import filter_report
from birdclef.data.filters import NoFilter

log = logging.getLogger(__name__)

REPORT_NAME = "filter_report.csv"


def recording_segments(frames, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per 5-s segment of each recording of `rows` (train.csv rows), in cache order.

    Columns: file, primary_label, segment, start, end (samples at the cache's rate).
    """
    meta = rows.drop_duplicates("filename")
    out = []
    for key, label in zip(meta["filename"], meta["primary_label"], strict=True):
        n = int(frames.index["n_samples"].iat[frames.position[key]])
        for i, (a, b) in enumerate(segment_spans(n, frames.sample_rate)):
            out.append((key, label, i, a, b))
    return pd.DataFrame(out, columns=["file", "primary_label", "segment", "start", "end"])


def apply_filter(
    row_filter, frames, before_rows: pd.DataFrame, after_rows: pd.DataFrame, manifests
):
    """(kept segments or None, per-class report) of the training side.

    `after_rows` are the rows the filter kept; a segment filter (one with `select`)
    then picks segments of them from `manifests()` (called only for such a filter),
    and training draws only from those. For row filters the result is None: every
    window of a kept recording trains, as before. task=train writes the report into
    the run folder as `REPORT_NAME`.
    """
    if isinstance(row_filter, NoFilter):  # filter=none: nothing filtered, nothing to report
        return None, None
    before = recording_segments(frames, before_rows)
    after = before[before["file"].isin(set(after_rows["filename"]))]
    kept = None
    if hasattr(row_filter, "select"):
        kept = after = row_filter.select(after, manifests())
    if kept is None:
        by_rows, by_segments = getattr(row_filter, "rescued", {}), {}
    else:
        by_rows = row_filter.rating.rescued if row_filter.rating is not None else {}
        by_segments = row_filter.rescued
    report = filter_report(before, after, frames.sample_rate, by_rows, by_segments)
    total = report.iloc[-1]
    log.info(
        "filter %s: kept %d of %d training segments (%.1f of %.1f min, %.1f%% removed); "
        "rescued classes: %s", type(row_filter).__name__, total["segments_after"],
        total["segments_before"], total["seconds_after"] / 60, total["seconds_before"] / 60,
        100 * total["share_removed"],
        sorted({*by_rows, *by_segments}) or "none",
    )  # fmt: skip
    return kept, report
