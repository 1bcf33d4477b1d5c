"""The DataModule: validated metadata -> cached windows -> train/val/soundscape batches.

Batches are dicts of the items in `birdclef.data.datasets` (keys `mel`, `target`,
`labels`, `primary`, `index`, and `background` when the augmentation asks for it),
stacked along a first batch dimension.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from birdclef.data.cache import CachedWindows, WindowCache
from birdclef.data.datasets import WindowDataset, clip_windows, soundscape_rows
from birdclef.data.filters import NoFilter
from birdclef.data.labels import InformedLabels
from birdclef.data.metadata import Metadata, load_metadata, load_soundscape_labels
from birdclef.data.splits import grouped_split
from birdclef.data.windows import SCORE_SECONDS
from birdclef.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CLIP_CHOICES = ("first", "all")
SAMPLERS = ("random", "balanced")
BAD_EXAMPLES = 3  # unreadable files quoted in an error message


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
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(
                f"data.batch_size={batch_size} must be >= 1 and data.num_workers={num_workers} >= 0."
            )
        if clip_seconds <= 0:
            raise ConfigError(
                f"clip_seconds={clip_seconds} must be positive (seconds per training window)."
            )
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
    def _cache(self, windowing: str, seconds: float) -> WindowCache:
        return WindowCache(self.cache_dir, self.frontend, seconds, windowing, self.cache_workers)

    def _train_windows(self) -> CachedWindows:
        meta = self._metadata()
        files = meta.train["filename"].drop_duplicates().tolist()
        groups = [f.split("/")[0] for f in files]  # one shard group per class folder
        paths = [meta.audio_path(f) for f in files]
        return self._cache("clip", self.clip_seconds).build(
            paths, files, groups, "caching train_audio"
        )

    def _scored_windows(self, stems: list[str]) -> CachedWindows:
        """The labelled test soundscapes on the competition's 5-s row grid."""
        audio_dir = self.root / "test_soundscapes"
        paths = [audio_dir / f"{s}.ogg" for s in stems]
        return self._cache("grid", SCORE_SECONDS).build(
            paths, stems, desc="caching test_soundscapes"
        )

    def _background_windows(self) -> CachedWindows:
        """train_soundscapes cut into training-length windows, for background augmentation."""
        folder = self.root / "train_soundscapes"
        paths = sorted(folder.glob("*.ogg"))
        windows = self._cache("grid", self.clip_seconds).build(
            paths, [p.stem for p in paths], desc="caching train_soundscapes"
        ) if paths else None  # fmt: skip
        if windows is None or windows.index.empty:
            raise DataError(
                f"background augmentation needs readable soundscapes in {folder}, and there are "
                "none; set augment.background_p=0 or use augment=none."
            )
        return windows

    def prepare_data(self) -> None:
        """Build every cache this run reads; `setup` then opens them.

        Each process runs it (under DDP too): a cache already built is only opened,
        and concurrent builders write the same shards atomically.
        """
        self._train_windows()
        solution = load_soundscape_labels(self.root, self.classes)
        if solution is not None:
            self._scored_windows(sorted(solution["stem"].unique()))
        if self.background:
            self._background_windows()

    # ---- datasets ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        meta = self._metadata()
        windows = self._train_windows()
        usable = meta.train[~meta.train["filename"].isin(set(windows.bad["file"]))]
        self.bad_files = windows.bad
        if len(windows.bad):
            log.warning(
                "skipped %d unreadable audio file(s), e.g. %s",
                len(windows.bad),
                windows.bad["error"].iloc[0],
            )
        if usable.empty:
            examples = "; ".join(windows.bad["error"].head(BAD_EXAMPLES))
            raise DataError(
                f"none of the {len(windows.bad)} files under {meta.audio_dir} could be read, e.g. {examples}"
            )
        usable = usable.reset_index(drop=True)
        # split first, filter the training side only: the validation set stays the same
        # whatever the filter, so filter settings are compared on equal terms
        is_val = grouped_split(usable, self.val_fraction, self.seed, self.min_val_recordings)
        if not is_val.any():
            raise ConfigError(
                f"the validation split is empty: no class has {self.min_val_recordings} recordings. "
                "Lower data.min_val_recordings or raise data.val_fraction."
            )
        train = self.row_filter(usable[~is_val].reset_index(drop=True))
        self.split = pd.concat([train.assign(split="train"), usable[is_val].assign(split="val")])
        self.train_set = clip_windows(windows, train, self.clips, self.label_rule, self.classes)
        if self.background:
            self.train_set.background = self._background_windows()
            self.bad_files = pd.concat([self.bad_files, self.train_set.background.bad], ignore_index=True)
        self.val_set = clip_windows(
            windows, usable[is_val], self.val_clips, self.label_rule, self.classes
        )
        self.test_set = self._soundscape_set()
        log.info(
            "data: %d classes, %d/%d train/val recordings -> %d/%d windows, %d soundscape rows",
            len(meta.classes), len(train), is_val.sum(), len(self.train_set), len(self.val_set),
            0 if self.test_set is None else len(self.test_set),
        )  # fmt: skip

    def _soundscape_set(self) -> WindowDataset | None:
        solution = load_soundscape_labels(self.root, self.classes)
        if solution is None:
            return None
        windows = self._scored_windows(sorted(solution["stem"].unique()))
        if len(windows.bad):  # their rows cannot be scored, so the test score would be wrong
            raise DataError(
                f"labelled test soundscapes could not be read: {windows.bad.to_dict('records')[:BAD_EXAMPLES]}"
            )
        self.soundscape_rows = solution[["row_id"]].reset_index(drop=True)
        sample_rate = self.frontend.sample_rate
        return soundscape_rows(
            windows,
            solution,
            self.classes,
            len(self.output_names),
            SCORE_SECONDS * sample_rate,
            sample_rate,
        )

    # ---- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool = False, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "random":
            return self._loader(self.train_set, shuffle=True)
        return self._loader(self.train_set, sampler=self.balanced_sampler())

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
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataError(f"no soundscape_labels.csv under {self.root}: nothing to test on.")
        return self._loader(self.test_set)
