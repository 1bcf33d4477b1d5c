"""The DataModule: validated metadata -> cached frames -> train/val/soundscape batches of windows.

Batches are dicts of the items in `birdclef.data.datasets` (keys `features`, `target`,
`truth`, `primary`, `index`, `background` when the augmentation asks for it, and
`teacher_features` in training batches when a distillation teacher's front end is given),
stacked along a first batch dimension. With `pseudo` (data.pseudo.labels), training batches
also draw pseudo-labelled train_soundscapes windows (`birdclef.data.pseudo`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.cache import CachedFrames
from birdclef.data.curation.apply import apply_filter
from birdclef.data.datamodule_caches import DataModuleCaches
from birdclef.data.datasets import (
    CROPS,
    WINDOW_CHOICES,
    TeacherFrames,
    WindowDataset,
    recording_windows,
    soundscape_rows,
)
from birdclef.data.filters import NoFilter
from birdclef.data.labels import InformedLabels
from birdclef.data.metadata import Metadata, load_metadata, load_soundscape_labels
from birdclef.data.pseudo import check_pseudo, pseudo_windows, read_pseudo
from birdclef.data.samplers import (
    EpochRedrawSampler,
    EpochSeededSampler,
    check_sampler,
    class_balanced_sampler,
)
from birdclef.data.splits import check_folds, fold_split, grouped_split

log = logging.getLogger(__name__)

BAD_EXAMPLES = 3  # unreadable files quoted in an error message


class BirdclefDataModule(DataModuleCaches, L.LightningDataModule):
    """Competition-layout folder -> cached frames -> windows cut at read time -> dict batches.

    The module is built from `conf/data/*.yaml` with the front end, label rule and
    row filter passed in as objects; it hands `classes` and `output_names` to the
    LightningModule so nothing mutates the config. With `teacher_frontend` (distillation),
    the training recordings are also cached with the teacher's front end (a cache of its
    own key) and training items carry `teacher_features` (pseudo-labelled windows too: their
    soundscapes are cached with the teacher's front end as well). With `pseudo.labels` (a
    pseudo_labels.csv), round(pseudo.ratio x labelled windows) pseudo-labelled windows
    join the training set (`fit_set`); validation and test stay labelled only. The caches
    (`prepare_data` and the builders `setup` reads) are `DataModuleCaches`' (datamodule_caches).
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | Path,
        frontend,
        labels: InformedLabels | None = None,
        train_filter=None,
        window_seconds: float = 5.0,
        train_windows: str = "all",
        val_windows: str = "all",
        crop: str = "fixed",
        crop_seconds: float | None = None,
        val_fraction: float = 0.2,
        min_val_recordings: int = 2,
        folds: int | None = None,
        fold: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        cache_workers: int | None = None,
        sampler: str = "random",
        balance_power: float = 0.5,
        background: bool = False,
        seed: int = 0,
        teacher_frontend=None,
        teacher_trained_on: list[set[str]] | None = None,
        pseudo=None,
    ) -> None:
        super().__init__()
        pseudo = dict(pseudo or {})
        self.pseudo_labels = pseudo.get("labels")
        self.pseudo_ratio = float(pseudo.get("ratio", 0.5))
        self.pseudo_power = float(pseudo.get("power", 1.0))
        self.pseudo_min_confidence = float(pseudo.get("min_confidence", 0.0))
        self.pseudo_frames = bool(pseudo.get("frames", False))
        self.pseudo_redraw = bool(pseudo.get("redraw", False))
        self.pseudo_confidence_weight = bool(pseudo.get("confidence_weight", False))
        threshold = pseudo.get("threshold")
        self.pseudo_threshold = None if threshold is None else float(threshold)
        self.pseudo_draws = 0  # pseudo windows an epoch reads (set with pseudo_set)
        check_pseudo(
            self.pseudo_ratio, self.pseudo_power, self.pseudo_min_confidence, self.pseudo_threshold
        )
        for name, value, choices in (
            ("data.train_windows", train_windows, WINDOW_CHOICES),
            ("data.val_windows", val_windows, WINDOW_CHOICES),
            ("data.crop", crop, CROPS),
        ):
            if value not in choices:
                raise ConfigError(f"{name}={value!r} must be one of {choices}.")
        if crop_seconds is not None and crop_seconds <= 0:
            raise ConfigError(
                f"data.crop_seconds={crop_seconds} must be positive, or null for the whole recording."
            )
        check_sampler(sampler, balance_power)
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(
                f"data.batch_size={batch_size} must be >= 1 and data.num_workers={num_workers} >= 0."
            )
        if window_seconds * frontend.sample_rate < frontend.hop_length:
            raise ConfigError(
                f"window_seconds={window_seconds} must be positive and hold at least one frame "
                "(seconds per training window)."
            )
        self.root, self.cache_dir = Path(root), Path(cache_dir)
        self.frontend = frontend
        self.label_rule = labels or InformedLabels()
        self.train_filter = train_filter or NoFilter()
        self.window_seconds, self.train_windows, self.val_windows = (
            window_seconds,
            train_windows,
            val_windows,
        )
        self.crop, self.crop_seconds = crop, crop_seconds
        self.val_fraction, self.min_val_recordings = val_fraction, min_val_recordings
        self.folds, self.fold = folds, fold
        if folds is not None:
            check_folds(folds, fold)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_workers = cache_workers
        self.sampler, self.balance_power, self.background = sampler, balance_power, background
        self.teacher_frontend = teacher_frontend
        self.teacher_trained_on = teacher_trained_on
        self.meta: Metadata | None = None
        self.pseudo_set: WindowDataset | None = None
        self.bad_files = pd.DataFrame(columns=["file", "error"])
        self.window_manifests: dict | None = None
        self.filter_report: pd.DataFrame | None = None

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

    # ---- datasets ---------------------------------------------------------------------------
    @property
    def window_samples(self) -> int:
        """Samples per training window."""
        return int(round(self.window_seconds * self.frontend.sample_rate))

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        meta = self._metadata()
        frames = self._train_frames()
        usable = meta.train[~meta.train["filename"].isin(set(frames.bad["file"]))]
        self.bad_files = frames.bad
        if len(frames.bad):
            log.warning(
                "skipped %d unreadable audio file(s), e.g. %s",
                len(frames.bad),
                frames.bad["error"].iloc[0],
            )
        if usable.empty:
            examples = "; ".join(frames.bad["error"].head(BAD_EXAMPLES))
            raise DataError(
                f"none of the {len(frames.bad)} files under {meta.audio_dir} could be read, e.g. {examples}"
            )
        usable = usable.reset_index(drop=True)
        # split first, filter the training side only: the validation set stays the same
        # whatever the filter, so filter settings are compared on equal terms
        if self.folds is None:
            is_val = grouped_split(usable, self.val_fraction, self.seed, self.min_val_recordings)
        else:
            is_val = fold_split(usable, self.folds, self.fold, self.seed)
        if not is_val.any():
            raise ConfigError(
                f"the validation split is empty: no class has {self.min_val_recordings} recordings. "
                "Lower data.min_val_recordings or raise data.val_fraction."
            )
        train_rows = usable[~is_val].reset_index(drop=True)
        train = self.train_filter(train_rows)
        filtered = train_rows[~train_rows["filename"].isin(set(train["filename"]))]
        self.split = pd.concat(  # every usable recording: "filtered" = dropped by the filter
            [train.assign(split="train"), filtered.assign(split="filtered"),
             usable[is_val].assign(split="val")]
        )  # fmt: skip
        kept, self.filter_report = apply_filter(
            self.train_filter, frames, train_rows, train, self._manifests
        )
        self.train_set = recording_windows(
            frames, train, self.train_windows, self.label_rule, self.classes, self.window_samples,
            self.frontend.finish, self.crop, self.crop_seconds, kept,
        )  # fmt: skip
        if self.teacher_frontend is not None:
            self.train_set.teacher = TeacherFrames(
                self._train_frames(self.teacher_frontend), self.teacher_frontend.finish,
                frames, self.train_set.n_frames, self._teacher_allowed(frames),
            )  # fmt: skip
        if self.background:
            self.train_set.background = self._background_frames()
            self.bad_files = pd.concat(
                [self.bad_files, self.train_set.background.bad], ignore_index=True
            )
        self.pseudo_set = self._pseudo_set() if self.pseudo_labels is not None else None
        self.val_set = recording_windows(  # always the fixed windows, comparable across runs
            frames, usable[is_val], self.val_windows, self.label_rule, self.classes, self.window_samples,
            self.frontend.finish,
        )  # fmt: skip
        self.test_set = self._soundscape_set()
        log.info(
            "data: %d classes, %d/%d train/val recordings -> %d/%d windows, %d soundscape rows, "
            "%d pseudo windows an epoch (of %d)", len(meta.classes), len(train),
            is_val.sum(), len(self.train_set), len(self.val_set),
            0 if self.test_set is None else len(self.test_set), self.pseudo_draws,
            0 if self.pseudo_set is None else len(self.pseudo_set),
        )  # fmt: skip

    def _pseudo_set(self) -> WindowDataset:
        """round(ratio x labelled) pseudo windows, with the training set's background crops.

        `pseudo.redraw`: every row once (at least that many windows), of which each epoch
        reads round(ratio x labelled), drawn anew (`EpochRedrawSampler`).
        """
        rows = read_pseudo(self.pseudo_labels, self.classes, self.pseudo_min_confidence)
        frames = self._soundscape_frames()
        if frames is None:
            raise DataError(
                f"data.pseudo.labels needs the soundscapes in {self.root / 'train_soundscapes'}, "
                "and there are none; use the data root the labels were made from."
            )
        if not self.background:  # else already reported with the background crops
            self.bad_files = pd.concat([self.bad_files, frames.bad], ignore_index=True)
        self.pseudo_draws = round(self.pseudo_ratio * len(self.train_set))
        count = max(self.pseudo_draws, len(rows)) if self.pseudo_redraw else self.pseudo_draws
        pseudo = pseudo_windows(
            frames, rows, self.classes, self.output_names, self.label_rule.activation,
            self.pseudo_power, self.window_samples, self.frontend.finish, count, self.seed,
            self.pseudo_frames, self.pseudo_labels, self.pseudo_threshold,
            self.pseudo_confidence_weight,
        )  # fmt: skip
        pseudo.background = self.train_set.background
        if self.pseudo_confidence_weight:  # labelled windows weigh 1, pseudo ones their top score
            self.train_set.weight = np.ones(len(self.train_set), dtype=np.float32)
        if self.teacher_frontend is not None:  # distillation: the teacher hears them too
            pseudo.teacher = TeacherFrames(
                self._soundscape_frames(self.teacher_frontend), self.teacher_frontend.finish,
                frames, pseudo.n_frames, self._teacher_allowed(frames, everyone=True),
            )  # fmt: skip
        return pseudo

    def _teacher_allowed(self, frames: CachedFrames, everyone: bool = False) -> np.ndarray | None:
        """[recordings of `frames`, teachers]: which teachers may score each recording's windows.

        Cross-fitted teachers (`teacher_trained_on`, the recordings each teacher trained on):
        those that did not train on the recording; all of them with `everyone` (soundscapes).
        None without cross-fitting. Every training recording needs at least one.
        """
        if self.teacher_trained_on is None:
            return None
        files = frames.index["file"].tolist()
        allowed = np.array(
            [[everyone or f not in trained for trained in self.teacher_trained_on] for f in files],
            dtype=bool,
        ).reshape(len(files), len(self.teacher_trained_on))
        if not everyone:
            needed = np.unique(self.train_set.recording)
            orphans = [files[r] for r in needed if not allowed[r].any()]
            if orphans:
                raise ConfigError(
                    f"cross-fitted teachers: every teacher trained on {len(orphans)} of the student's "
                    f"training recordings, e.g. {orphans[0]}, so none can score them out of fold. "
                    "Train the teachers on folds (data.folds=K data.fold=0..K-1, one seed for all K) "
                    "or distil with teacher.cross_fit=false."
                )
        return allowed

    @property
    def fit_set(self) -> Dataset:
        """What training draws from: the labelled windows, then the pseudo windows if any."""
        if self.pseudo_set is None or len(self.pseudo_set) == 0:
            return self.train_set
        return ConcatDataset([self.train_set, self.pseudo_set])

    def _soundscape_set(self) -> WindowDataset | None:
        solution = load_soundscape_labels(self.root, self.classes)
        if solution is None:
            return None
        frames = self._scored_frames(sorted(solution["stem"].unique()))
        if len(frames.bad):  # their rows cannot be scored, so the test score would be wrong
            raise DataError(
                f"labelled test soundscapes could not be read: {frames.bad.to_dict('records')[:BAD_EXAMPLES]}"
            )
        self.soundscape_rows = solution[["row_id"]].reset_index(drop=True)
        return soundscape_rows(
            frames, solution, self.classes, len(self.output_names),
            ROW_SECONDS * self.frontend.sample_rate, self.frontend.finish,
        )  # fmt: skip

    # ---- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, shuffle: bool = False, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, sampler=sampler,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        if self.sampler == "balanced":
            return self._loader(self.fit_set, sampler=self.balanced_sampler())
        if self.redraws:
            sampler = EpochRedrawSampler(
                len(self.train_set), len(self.pseudo_set), self.pseudo_draws, self.seed
            )
            return self._loader(self.fit_set, sampler=sampler)
        return self._loader(self.fit_set, shuffle=True)

    @property
    def redraws(self) -> bool:
        """True when each epoch reads only some of the pseudo windows (`pseudo.redraw`)."""
        return self.pseudo_set is not None and len(self.pseudo_set) > self.pseudo_draws

    def balanced_sampler(self) -> EpochSeededSampler:
        """The training windows' `class_balanced_sampler` (pseudo windows last), data.balance_power."""
        return class_balanced_sampler(
            self.train_set.primary, len(self.classes), len(self.fit_set), self.balance_power,
            self.seed, self.pseudo_draws if self.redraws else None,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataError(f"no soundscape_labels.csv under {self.root}: nothing to test on.")
        return self._loader(self.test_set)
