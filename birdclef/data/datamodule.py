"""The DataModule: validated metadata -> cached windows -> train/val/soundscape batches.

Batches are dicts:
    mel         float32 [B, 1, features, frames]  front-end output in dB
    target      float32 [B, outputs]   training target (informed smoothing, + null column)
    labels      float32 [B, classes]   0/1 presence, the truth for AUC
    primary     int64   [B]            primary class index (-1 on soundscape rows)
    background  float32 [B, 1, features, frames]  a random train_soundscapes window
                (training batches only, when the augmentation asks for it)
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from birdclef.data.cache import CachedWindows, WindowCache
from birdclef.data.filters import NoFilter
from birdclef.data.labels import InformedLabels, presence
from birdclef.data.metadata import Metadata, load_metadata, load_soundscape_labels
from birdclef.data.splits import grouped_split
from birdclef.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CLIP_CHOICES = ("first", "all")
SAMPLERS = ("random", "balanced")


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

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mel = torch.from_numpy(self.cache.features(self.rows[i]).astype(np.float32))
        item = {
            "mel": mel.unsqueeze(0),
            "target": torch.tensor(self.target[i]),
            "labels": torch.tensor(self.labels[i]),
            "primary": torch.tensor(self.primary[i], dtype=torch.long),
        }
        if self.background is not None:
            j = int(torch.randint(len(self.background.index), ()))  # seeded per worker by Lightning
            item["background"] = torch.from_numpy(
                self.background.features(j).astype(np.float32)
            ).unsqueeze(0)
        return item


class BirdclefDataModule(L.LightningDataModule):
    """Competition-layout folder -> cached log-mel windows -> dict batches.

    The module is built from `conf/data/*.yaml` with the front end, label rule and
    row filter passed in as objects; it hands `classes` and `output_names` to the
    LightningModule so nothing mutates the config.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        frontend,
        labels: InformedLabels | None = None,
        row_filter=None,
        clip_seconds: float = 5.0,
        clips: str = "all",
        val_clips: str = "all",
        val_fraction: float = 0.2,
        min_val_recordings: int = 2,
        batch_size: int = 32,
        num_workers: int = 0,
        cache_workers: int | None = None,
        sampler: str = "random",
        balance_power: float = 0.5,
        background: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("data.clips", clips), ("data.val_clips", val_clips)):
            if value not in CLIP_CHOICES:
                raise ConfigError(f"{name}={value!r} must be one of {CLIP_CHOICES}.")
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler={sampler!r} must be one of {SAMPLERS}.")
        if not 0.0 <= balance_power <= 1.0:
            raise ConfigError(
                f"data.balance_power={balance_power} must be in [0, 1] (0 = no balancing, 1 = equal classes)."
            )
        if batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size} must be at least 1.")
        self.root, self.cache_dir = Path(root), Path(cache_dir)
        self.frontend = frontend
        self.label_rule = labels or InformedLabels()
        self.row_filter = row_filter or NoFilter()
        self.clip_seconds, self.clips, self.val_clips = clip_seconds, clips, val_clips
        self.val_fraction, self.min_val_recordings = val_fraction, min_val_recordings
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_workers = cache_workers
        self.sampler, self.balance_power, self.background = sampler, balance_power, background
        self.meta: Metadata | None = None
        self.bad_files = pd.DataFrame(columns=["file", "error"])

    # ---- what the LightningModule needs -------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return self._metadata().classes

    @property
    def output_names(self) -> list[str]:
        return self.label_rule.output_names(self.classes)

    def _metadata(self) -> Metadata:
        if self.meta is None:
            self.meta = load_metadata(self.root)
        return self.meta

    # ---- caches ---------------------------------------------------------------------------
    def _cache(self, windowing: str) -> WindowCache:
        return WindowCache(
            self.cache_dir, self.frontend, self.clip_seconds, windowing, self.cache_workers
        )

    def _train_windows(self) -> CachedWindows:
        meta = self._metadata()
        files = meta.train["filename"].drop_duplicates().tolist()
        return self._cache("clip").build(
            [meta.audio_path(f) for f in files],
            files,
            [f.split("/")[0] for f in files],
            "caching train_audio",
        )

    def _soundscape_windows(
        self, stems: list[str], folder: str = "test_soundscapes"
    ) -> CachedWindows:
        audio_dir = self.root / folder
        return self._cache("grid").build(
            [audio_dir / f"{s}.ogg" for s in stems], stems, desc=f"caching {folder}"
        )

    def _background_windows(self) -> CachedWindows:
        stems = sorted(p.stem for p in (self.root / "train_soundscapes").glob("*.ogg"))
        if not stems:
            raise DataError(
                f"background augmentation needs soundscapes in {self.root / 'train_soundscapes'}, "
                "and there are none; set augment.background_p=0 or use augment=none."
            )
        return self._soundscape_windows(stems, "train_soundscapes")

    def prepare_data(self) -> None:
        """Build the caches once (rank 0 under DDP); `setup` then only opens them."""
        self._train_windows()
        solution = load_soundscape_labels(self.root, self.classes)
        if solution is not None:
            self._soundscape_windows(sorted(solution["stem"].unique()))
        if self.background:
            self._background_windows()

    # ---- datasets ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        meta = self._metadata()
        windows = self._train_windows()
        self.bad_files = windows.bad
        if len(windows.bad):
            log.warning(
                "skipped %d unreadable audio file(s), e.g. %s",
                len(windows.bad),
                windows.bad["error"].iloc[0],
            )
        train = self.row_filter(meta.train)
        train = train[~train["filename"].isin(set(windows.bad["file"]))].reset_index(drop=True)
        if train.empty:
            raise DataError(
                f"no usable training audio under {meta.audio_dir}; see the skipped-file report."
            )
        is_val = grouped_split(train, self.val_fraction, self.seed, self.min_val_recordings)
        if not is_val.any():
            raise ConfigError(
                f"the validation split is empty: no class has {self.min_val_recordings} recordings. "
                "Lower data.min_val_recordings or raise data.val_fraction."
            )
        self.split = train.assign(split=np.where(is_val, "val", "train"))
        self.train_set = self._window_set(windows, train[~is_val], self.clips)
        if self.background:
            self.train_set.background = self._background_windows()
        self.val_set = self._window_set(windows, train[is_val], self.val_clips)
        self.test_set = self._soundscape_set()
        log.info(
            "data: %d classes, %d/%d train/val recordings -> %d/%d windows, %d soundscape rows",
            len(meta.classes), (~is_val).sum(), is_val.sum(), len(self.train_set), len(self.val_set),
            0 if self.test_set is None else len(self.test_set),
        )  # fmt: skip

    def _window_set(self, windows: CachedWindows, rows: pd.DataFrame, clips: str) -> WindowDataset:
        classes = self.classes
        index = windows.index
        chosen = index[index["file"].isin(set(rows["filename"]))]
        if clips == "first":
            chosen = chosen[chosen["window"] == 0]
        by_file = rows.drop_duplicates("filename").set_index("filename")
        meta_rows = by_file.loc[chosen["file"]]
        target = self.label_rule.encode_all(
            meta_rows["primary_label"], meta_rows["secondary_labels"], classes
        )
        truth = presence(meta_rows["primary_label"], meta_rows["secondary_labels"], classes)
        lookup = {c: i for i, c in enumerate(classes)}
        primary = np.array([lookup[p] for p in meta_rows["primary_label"]], dtype=np.int64)
        return WindowDataset(windows, chosen.index.to_numpy(), target, truth, primary)

    def _soundscape_set(self) -> WindowDataset | None:
        solution = load_soundscape_labels(self.root, self.classes)
        if solution is None:
            return None
        windows = self._soundscape_windows(sorted(solution["stem"].unique()))
        if len(windows.bad):
            raise DataError(
                f"labelled test soundscapes could not be read: {windows.bad.to_dict('records')[:3]}"
            )
        sample_rate = self.frontend.sample_rate
        window = int(round(self.clip_seconds * sample_rate))
        position = {
            (f, s): i
            for i, (f, s) in enumerate(
                zip(windows.index["file"], windows.index["start"], strict=True)
            )
        }
        starts = solution["end"] * sample_rate - window
        missing = [
            r
            for r, k in zip(
                solution["row_id"], zip(solution["stem"], starts, strict=True), strict=True
            )
            if k not in position
        ]
        if missing:
            raise DataError(f"soundscape rows past the end of their audio: {missing[:5]}.")
        rows = [position[k] for k in zip(solution["stem"], starts, strict=True)]
        truth = solution[self.classes].to_numpy(np.float32)
        target = np.zeros((len(rows), len(self.output_names)), np.float32)
        self.soundscape_rows = solution[["row_id"]].reset_index(drop=True)
        return WindowDataset(windows, rows, target, truth, np.full(len(rows), -1))

    # ---- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, drop_last=False,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "random":
            return self._loader(self.train_set, shuffle=True)
        return DataLoader(
            self.train_set, batch_size=self.batch_size, sampler=self.balanced_sampler(),
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def balanced_sampler(self) -> WeightedRandomSampler:
        """Draw windows with weight n_c ** -balance_power, n_c = windows of their primary class.

        Power 0 is plain shuffling; 1 makes every class equally likely per draw; the
        default 0.5 lifts the long tail without repeating a 1-clip class endlessly.
        Lightning wraps it in a distributed sampler under DDP.
        """
        primary = torch.as_tensor(self.train_set.primary)
        counts = torch.bincount(primary, minlength=len(self.classes)).clamp_min(1).double()
        weights = counts[primary].pow(-self.balance_power)
        generator = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(
            weights, num_samples=len(primary), replacement=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataError(f"no soundscape_labels.csv under {self.root}: nothing to test on.")
        return self._loader(self.test_set, shuffle=False)
