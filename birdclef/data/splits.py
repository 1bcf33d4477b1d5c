"""Train/validation split grouped by recording and stratified by primary label (`data.split`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError


def grouped_split(
    table: pd.DataFrame,
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
        raise ConfigError(f"data.split.val_fraction={val_fraction} must be in [0, 1).")
    rng = np.random.default_rng(seed)
    groups = table.groupby(group_column, sort=True)[label_column].first()
    val_groups: set = set()
    if val_fraction > 0:
        for _, members in groups.groupby(groups, sort=True):
            names = members.index.to_numpy()
            if len(names) < max(min_recordings, 2):
                continue
            count = min(max(1, int(round(val_fraction * len(names)))), len(names) - 1)
            val_groups.update(rng.permutation(names)[:count].tolist())
    return table[group_column].isin(val_groups).to_numpy()


def check_folds(folds: int, fold: int) -> None:
    """One ConfigError unless `folds` >= 2 and `fold` in 0..folds-1 (integers)."""
    if int(folds) != folds or folds < 2 or int(fold) != fold or not 0 <= fold < folds:
        raise ConfigError(
            f"data.split.folds={folds} must be an integer >= 2 and data.split.fold={fold} one of "
            f"0..{max(int(folds) - 1, 0)} (data.split.folds=null for the val_fraction split)."
        )


def fold_split(
    table: pd.DataFrame,
    folds: int,
    fold: int,
    seed: int,
    group_column: str = "filename",
    label_column: str = "primary_label",
) -> np.ndarray:
    """Boolean mask over `frame` rows: True for the recordings of fold `fold` of `folds`.

    K-fold cross-validation grouped by recording and stratified by primary label: each
    class's recordings, in a seeded order, are dealt round robin to the folds, the deal
    continuing from class to class so that classes with one recording spread over the
    folds too. Every recording is in exactly one fold, fold sizes differ by at most one,
    and the same seed gives the same folds for every `fold`; a class with fewer
    recordings than folds is missing from the training side of some folds.
    """
    check_folds(folds, fold)
    rng = np.random.default_rng(seed)
    groups = table.groupby(group_column, sort=True)[label_column].first()
    val_groups: set = set()
    dealt = 0
    for _, members in groups.groupby(groups, sort=True):
        names = rng.permutation(members.index.to_numpy())
        val_groups.update(n for i, n in enumerate(names) if (dealt + i) % folds == fold)
        dealt += len(names)
    return table[group_column].isin(val_groups).to_numpy()


@dataclass(frozen=True)
class SplitSpec:
    """`data.split`: which labelled recordings validate, by `val_fraction` or K-fold (`folds`)."""

    val_fraction: float = 0.2  # share of each class's recordings held out
    min_val_recordings: int = 2  # classes with fewer recordings stay in training only
    folds: int | None = None  # K-fold: validation = fold `fold` of K; None = val_fraction
    fold: int = 0
    group_by: str = "filename"  # train.csv column whose equal values stay on one side

    def __post_init__(self) -> None:
        if self.folds is not None:
            check_folds(self.folds, self.fold)
        elif not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.split.val_fraction={self.val_fraction} must be in [0, 1).")

    def validation(self, recordings: pd.DataFrame, seed: int) -> np.ndarray:
        """Boolean mask over `recordings` (train.csv rows): True for validation; never empty."""
        if self.group_by not in recordings:
            raise ConfigError(
                f"data.split.group_by={self.group_by}: train.csv has no such column; "
                "use filename (one recording per group) or a column of train.csv."
            )
        if self.folds is None:
            is_val = grouped_split(
                recordings, self.val_fraction, seed, self.min_val_recordings, self.group_by
            )
        else:
            is_val = fold_split(recordings, self.folds, self.fold, seed, self.group_by)
        if not is_val.any():
            raise ConfigError(
                f"the validation split is empty: no class has {self.min_val_recordings} "
                "recordings. Lower data.split.min_val_recordings or raise data.split.val_fraction."
            )
        return is_val
