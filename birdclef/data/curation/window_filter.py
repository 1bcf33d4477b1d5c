"""The training-data filter of the `filter` group: rating (stage 1), YAMNet keep-list and voice removal (stage 2).

Stages, in order, on the training side only: the rating filter on recordings
(`filter.rating`), YAMNet's keep-list on 5-s windows (`filter.yamnet`), then `filter.voice.drop`
of the speech-flagged windows still kept (`filter.voice`). A species whose windows would all go
keeps its `rescue` best ones (highest YAMNet keep score, then least speech, then earliest).
`build_filter` makes the filter of the enabled stages.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError, DataError
from birdclef.data.curation.detectors import SileroVad, YamnetDetector
from birdclef.data.curation.manifest import WindowManifest
from birdclef.data.filters import NoFilter, RatingFilter

log = logging.getLogger(__name__)

SPEECH_DETECTORS = ("silero", "yamnet")


class WindowFilter:
    """Recordings by rating, then 5-s windows by detectors (YAMNet's keep-list, speech)."""

    def __init__(
        self, min_rating: float | None = None, keep_top: int = 5, yamnet=None,
        voice_drop: float | None = None, speech: str = "silero", vad_threshold: float = 0.5,
        min_speech_seconds: float = 0.5, rescue: int = 2, seed: int = 0,
    ) -> None:  # fmt: skip
        if voice_drop is not None and not 0.0 <= voice_drop <= 1.0:
            raise ConfigError(f"filter.voice.drop={voice_drop} must be in [0, 1].")
        if speech not in SPEECH_DETECTORS:
            raise ConfigError(
                f"filter.voice.detector={speech!r} must be one of {SPEECH_DETECTORS}."
            )
        if speech == "yamnet" and voice_drop is not None and not yamnet:
            raise ConfigError(
                "filter.voice.detector=yamnet reads YAMNet's speech classes: set "
                "filter.yamnet.enabled=true too (its model and keep-list)."
            )
        if rescue < 0 or min_speech_seconds <= 0:
            raise ConfigError(
                f"filter.rescue={rescue} must be >= 0 and filter.voice.min_speech_seconds="
                f"{min_speech_seconds} > 0 (s of speech that flag a window)."
            )
        self.rating = None if min_rating is None else RatingFilter(min_rating, keep_top)
        self.yamnet = YamnetDetector(**dict(yamnet)) if yamnet else None
        self.vad = (
            SileroVad(vad_threshold) if voice_drop is not None and speech == "silero" else None
        )
        self.voice_drop, self.speech = voice_drop, speech
        self.min_speech_seconds, self.rescue, self.seed = min_speech_seconds, rescue, seed
        self.rescued: dict[str, int] = {}
        self._checked = False
        if self.yamnet is None and voice_drop is None:
            raise ConfigError(
                "this window filter has no stage: set filter.yamnet.enabled=true or "
                "filter.voice.enabled=true."
            )

    def __call__(self, train: pd.DataFrame) -> pd.DataFrame:
        return train if self.rating is None else self.rating(train)

    def detectors(self) -> list:
        return [d for d in (self.yamnet, self.vad) if d is not None]

    def manifests(self, paths, keys, groups, cache_dir, sample_rate: int, workers=None) -> dict:
        """Each detector's manifest of these files (built where missing), by detector name."""
        if not self._checked:
            for detector in self.detectors():
                detector.check()
            self._checked = True
        return {
            d.name: WindowManifest(cache_dir, d, sample_rate, workers).build(paths, keys, groups)
            for d in self.detectors()
        }

    def select(self, windows: pd.DataFrame, manifests: dict) -> pd.DataFrame:
        """The kept rows of `windows` (file, primary_label, window, start, end)."""
        table = windows.reset_index(drop=True)
        keep = np.ones(len(table), bool)
        score = np.zeros(len(table))
        speech_s = np.zeros(len(table))
        if self.yamnet is not None:
            scores = self._join(table, manifests["yamnet"], ["keep", "keep_score", "speech_s"])
            keep &= scores["keep"].to_numpy(bool)
            score = scores["keep_score"].to_numpy(float)
            if self.speech == "yamnet":
                speech_s = scores["speech_s"].to_numpy(float)
        if self.vad is not None:
            speech_s = self._join(table, manifests["silero"], ["speech_s"])["speech_s"].to_numpy(
                float
            )
        if self.voice_drop is not None:
            flagged = np.flatnonzero(keep & (speech_s >= self.min_speech_seconds))
            n_drop = int(round(self.voice_drop * len(flagged)))
            rng = np.random.default_rng(self.seed)
            keep[rng.permutation(flagged)[:n_drop]] = False
            log.info(
                "filter voice_drop=%s: %d of %d speech-flagged windows dropped (%s)",
                self.voice_drop, n_drop, len(flagged), self.speech,
            )  # fmt: skip
        self.rescued = {}
        order = pd.DataFrame({"score": -score, "speech": speech_s, "pos": np.arange(len(table))})
        for label, rows in table.groupby("primary_label", sort=True):
            if keep[rows.index].any() or self.rescue == 0:
                continue
            best = (
                order.loc[rows.index].sort_values(["score", "speech", "pos"]).index[: self.rescue]
            )
            keep[best] = True
            self.rescued[str(label)] = len(best)
        return table[keep].reset_index(drop=True)

    @staticmethod
    def _join(table: pd.DataFrame, manifest, columns: list[str]) -> pd.DataFrame:
        """The manifest's `columns` for each window of `table`; unscored windows are kept."""
        scored = manifest.windows.set_index(["file", "window"])[columns]
        joined = scored.reindex(pd.MultiIndex.from_frame(table[["file", "window"]]))
        missing = int(joined[columns[0]].isna().sum())
        if missing == len(joined) and len(joined):
            raise DataError(
                "no training window has detector scores: the manifest was built for other files; "
                "delete <cache_dir>/windows and run again."
            )
        if missing:
            log.warning("%d window(s) without detector scores are kept as they are", missing)
        defaults = {"keep": True, "keep_score": 0.0, "speech_s": 0.0}
        return joined.fillna({c: defaults[c] for c in columns}).infer_objects(copy=False)


def filter_report(
    before: pd.DataFrame, after: pd.DataFrame, sample_rate: int,
    rescued_recordings: dict | None = None, rescued_windows: dict | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per class: recordings, windows and seconds before and after the filter, share removed.

    `before`/`after` hold one row per window (file, primary_label, start, end in samples);
    seconds count overlapping windows once. `rescued_recordings` (rating stage) and
    `rescued_windows` (window stage) count what the rescue rule brought back per class.
    The last row, `all`, sums the classes.
    """
    rescued_recordings, rescued_windows = rescued_recordings or {}, rescued_windows or {}
    from birdclef.data.curation.manifest import seconds_of

    rows = []
    for label, part in before.groupby("primary_label", sort=True):
        kept = after[after["primary_label"] == label]
        rows.append({
            "class": str(label), "recordings_before": part["file"].nunique(),
            "recordings_after": kept["file"].nunique(), "windows_before": len(part),
            "windows_after": len(kept), "seconds_before": seconds_of(part, sample_rate),
            "seconds_after": seconds_of(kept, sample_rate),
            "rescued_recordings": int(rescued_recordings.get(str(label), 0)),
            "rescued_windows": int(rescued_windows.get(str(label), 0)),
        })  # fmt: skip
    report = pd.DataFrame(rows)
    total = report.drop(columns="class").sum().to_dict()
    report = pd.concat([report, pd.DataFrame([{"class": "all", **total}])], ignore_index=True)
    counts = [c for c in report.columns if c.startswith(("recordings_", "windows_", "rescued_"))]
    report[counts] = report[counts].astype(int)
    report["share_removed"] = (1 - report["seconds_after"] / report["seconds_before"]).round(4)
    report[["seconds_before", "seconds_after"]] = report[["seconds_before", "seconds_after"]].round(
        2
    )
    return report


def build_filter(rating, yamnet, voice, rescue: int = 2, seed: int = 0):
    """The filter of the `filter` group's enabled stages (each a mapping with `enabled`)."""
    on = {
        name: bool(stage["enabled"])
        for name, stage in (("rating", rating), ("yamnet", yamnet), ("voice", voice))
    }
    if not (on["yamnet"] or on["voice"]):
        return (
            RatingFilter(rating["min_rating"], rating["keep_top"]) if on["rating"] else NoFilter()
        )
    return WindowFilter(
        min_rating=rating["min_rating"] if on["rating"] else None,
        keep_top=rating["keep_top"],
        yamnet={k: yamnet[k] for k in ("model", "speech_threshold", "keep")}
        if on["yamnet"]
        else None,
        voice_drop=voice["drop"] if on["voice"] else None,
        speech=voice["detector"],
        vad_threshold=voice["vad_threshold"],
        min_speech_seconds=voice["min_speech_seconds"],
        rescue=rescue,
        seed=seed,
    )
