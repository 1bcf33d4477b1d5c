"""Train/validation split grouped by recording and stratified by primary label."""

from __future__ import annotations

import numpy as np
import pandas as pd

from birdclef.errors import ConfigError


def grouped_split(
    frame: pd.DataFrame,
    val_fraction: float,
    seed: int,
    min_recordings: int = 3,
    group_column: str = "filename",
    label_column: str = "primary_label",
) -> np.ndarray:
    """Boolean mask over `frame` rows: True for validation.

    Rows sharing `group_column` (one recording) land on one side, so no window of a
    recording is both trained and validated on. Within each class that has at
    least `min_recordings` recordings, round(val_fraction * n) of them (at least one,
    always leaving one for training) go to validation; rarer classes stay in
    training only. The same seed gives the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={val_fraction} must be in [0, 1).")
    rng = np.random.default_rng(seed)
    groups = frame.groupby(group_column, sort=True)[label_column].first()
    val_groups: set = set()
    if val_fraction > 0:
        for _, members in groups.groupby(groups, sort=True):
            names = members.index.to_numpy()
            if len(names) < max(min_recordings, 2):
                continue
            count = min(max(1, int(round(val_fraction * len(names)))), len(names) - 1)
            val_groups.update(rng.permutation(names)[:count].tolist())
    return frame[group_column].isin(val_groups).to_numpy()
