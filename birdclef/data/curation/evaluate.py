"""Detectors against the synthetic set's hidden truth (train_audio_segments.csv): precision, recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TRUTH_NAME = "train_audio_segments.csv"
ANIMAL_KINDS = ("call", "secondary")


def _overlap(windows: pd.DataFrame, events: pd.DataFrame, sample_rate: int) -> np.ndarray:
    """Seconds of each window covered by `events` (filename, start, end in s), overlaps once."""
    out = np.zeros(len(windows))
    by_file = {f: e for f, e in events.groupby("filename")}
    for pos, (file, a, b) in enumerate(
        zip(
            windows["file"],
            windows["start"] / sample_rate,
            windows["end"] / sample_rate,
            strict=True,
        )
    ):
        spans = by_file.get(file)
        if spans is None:
            continue
        lo = np.clip(spans["start"].to_numpy(), a, b)
        hi = np.clip(spans["end"].to_numpy(), a, b)
        order = np.argsort(lo)
        reach, total = a, 0.0
        for x, y in zip(lo[order], hi[order], strict=True):
            total += max(0.0, y - max(x, reach))
            reach = max(reach, y)
        out[pos] = total
    return out


def window_truth(
    windows: pd.DataFrame, root: str | Path, sample_rate: int, min_speech_seconds: float
) -> pd.DataFrame | None:
    """Per window: `voice_s`, `call_s`, `truth_voice` (>= min_speech_seconds of the spoken
    intro) and `truth_empty` (no call of any species: only intro, silence or noise).

    None when `root` has no truth side file (real data).
    """
    path = Path(root) / TRUTH_NAME
    if not path.is_file():
        return None
    events = pd.read_csv(path, dtype={"filename": str})
    voice = _overlap(windows, events[events["kind"] == "voice"], sample_rate)
    calls = _overlap(windows, events[events["kind"].isin(ANIMAL_KINDS)], sample_rate)
    return pd.DataFrame({
        "voice_s": voice.round(3), "call_s": calls.round(3),
        "truth_voice": voice >= min_speech_seconds, "truth_empty": calls == 0,
    })  # fmt: skip


def precision_recall(predicted, truth) -> dict[str, float]:
    """Precision and recall of boolean `predicted` against `truth`, and the counts behind them."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "tp": tp, "fp": fp, "fn": fn,
    }  # fmt: skip
