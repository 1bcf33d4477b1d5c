"""Row filters applied to train.csv before training (the study's data filtering, stage 1).

Stage 2 (windows scored by YAMNet and Silero VAD) is `birdclef.data.curation.window_filter`.
"""

from __future__ import annotations

import logging

import pandas as pd

from birdclef.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class NoFilter:
    """Keep every row."""

    def __call__(self, train: pd.DataFrame) -> pd.DataFrame:
        return train


class RatingFilter:
    """Drop rated Xeno-canto rows below `min_rating`, keeping rare classes alive.

    Only XC rows carry a real rating (0 means unrated), so unrated and non-XC rows
    are kept. A class that would lose every row keeps its `keep_top` best-rated
    rows instead, as the study did for the jaguar and the foam-nest frog.
    """

    def __init__(self, min_rating: float = 3.0, keep_top: int = 5) -> None:
        if not 0.0 <= min_rating <= 5.0 or keep_top < 0:
            raise ConfigError(
                f"filter.rating.min_rating={min_rating} must be in [0, 5] and filter.rating.keep_top={keep_top} >= 0."
            )
        self.min_rating, self.keep_top = min_rating, keep_top
        self.rescued: dict[str, int] = {}  # class -> recordings brought back by the rescue rule

    def __call__(self, train: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("collection", "rating") if c not in train]
        if missing:
            raise DataError(
                f"filter.rating needs train.csv column(s) {missing}; set filter.rating.enabled=false."
            )
        rated = (train["collection"] == "XC") & (train["rating"] > 0)
        keep = ~rated | (train["rating"] >= self.min_rating)
        rescued = []
        self.rescued = {}
        for label, rows in train.groupby("primary_label"):
            if not keep[rows.index].any():
                best = rows.sort_values("rating", ascending=False, kind="stable").index[
                    : self.keep_top
                ]
                keep[best] = True
                rescued.append(label)
                self.rescued[str(label)] = len(best)
        log.info(
            "filter.rating: kept %d of %d recordings (min_rating=%s); rescued classes: %s",
            int(keep.sum()), len(train), self.min_rating, rescued or "none",
        )  # fmt: skip
        return train[keep].reset_index(drop=True)
