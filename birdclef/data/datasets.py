"""Torch datasets over cached windows: labelled clip windows and scored soundscape rows.

Items are dicts:
    mel         float32 [1, features, frames]  front-end output (dB for the mel front ends)
    target      float32 [outputs]   training target (informed smoothing, + null column)
    labels      float32 [classes]   0/1 presence, the truth for AUC
    primary     int64   []          primary class index (-1 on soundscape rows)
    index       int64   []          the item's position in its dataset (to de-duplicate DDP rows)
    background  float32 [1, features, frames]  a random train_soundscapes window
                (training items only, when the augmentation asks for it)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from birdclef.data.cache import CachedWindows
from birdclef.data.labels import InformedLabels, presence
from birdclef.errors import DataError

NO_PRIMARY = -1  # soundscape rows have no primary label


class WindowDataset(Dataset):
    """Cached windows selected by `rows` (positions in the cache index) with their targets.

    With `background` (cached soundscape windows), each item also carries one of
    them drawn at random, for background-noise augmentation.
    """

    def __init__(
        self, cache: CachedWindows, rows, target, labels, primary, background=None
    ) -> None:
        self.cache, self.rows = cache, np.asarray(rows)
        self.target, self.labels, self.primary = target, labels, primary
        self.background = background

    def __len__(self) -> int:
        return len(self.rows)

    def _features(self, cache: CachedWindows, row: int) -> torch.Tensor:
        return torch.from_numpy(cache.features(row).astype(np.float32)).unsqueeze(0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {
            "mel": self._features(self.cache, self.rows[i]),
            "target": torch.tensor(self.target[i]),
            "labels": torch.tensor(self.labels[i]),
            "primary": torch.tensor(self.primary[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }
        if self.background is not None:
            j = int(torch.randint(len(self.background.index), ()))  # seeded per worker by Lightning
            item["background"] = self._features(self.background, j)
        return item


def clip_windows(
    windows: CachedWindows, rows: pd.DataFrame, clips: str, rule: InformedLabels, classes: list[str]
) -> WindowDataset:
    """The windows of the clips in `rows` (train.csv rows): all of them, or the first of each."""
    index = windows.index
    chosen = index[index["file"].isin(set(rows["filename"]))]
    if clips == "first":
        chosen = chosen[chosen["window"] == 0]
    meta = rows.drop_duplicates("filename").set_index("filename").loc[chosen["file"]]
    target = rule.encode_all(meta["primary_label"], meta["secondary_labels"], classes)
    truth = presence(meta["primary_label"], meta["secondary_labels"], classes)
    lookup = {c: i for i, c in enumerate(classes)}
    primary = np.array([lookup[p] for p in meta["primary_label"]], dtype=np.int64)
    return WindowDataset(windows, chosen.index.to_numpy(), target, truth, primary)


def soundscape_rows(
    windows: CachedWindows,
    solution: pd.DataFrame,
    classes: list[str],
    outputs: int,
    window: int,
    sample_rate: int,
) -> WindowDataset:
    """One item per scored row of `solution` (row_id, stem, end, class columns)."""
    position = {
        key: i
        for i, key in enumerate(zip(windows.index["file"], windows.index["start"], strict=True))
    }
    keys = list(zip(solution["stem"], solution["end"] * sample_rate - window, strict=True))
    missing = [r for r, k in zip(solution["row_id"], keys, strict=True) if k not in position]
    if missing:
        raise DataError(
            f"soundscape rows {missing[:5]} do not start on the {window / sample_rate:g}-s grid of "
            "their audio or lie past its end; row ids must be <stem>_<end second> of whole windows."
        )
    rows = [position[k] for k in keys]
    truth = solution[classes].to_numpy(np.float32)
    target = np.zeros((len(rows), outputs), np.float32)
    return WindowDataset(windows, rows, target, truth, np.full(len(rows), NO_PRIMARY))
