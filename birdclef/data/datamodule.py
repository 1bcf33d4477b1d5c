"""The DataModule: validated metadata -> cached frames -> train/val/soundscape batches of windows.

Batches are dicts of the items in `birdclef.data.datasets` (keys `features`, `target`,
`truth`, `primary`, `index`, `background` when the augmentation asks for it, and
`teacher_features` in training batches with a distillation teacher, `TeacherInputs`),
stacked along a first batch dimension. With `pseudo` (data.pseudo.labels), training batches
also draw pseudo-labelled train_soundscapes windows (`birdclef.data.pseudo`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from birdclef.core.errors import DataError
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.cache import CacheSpec
from birdclef.data.curation.apply import apply_filter
from birdclef.data.datamodule_caches import DataModuleCaches
from birdclef.data.datasets import (
    TeacherFrames,
    WindowDataset,
    recording_windows,
    soundscape_rows,
)
from birdclef.data.filters import NoFilter
from birdclef.data.labels import InformedLabels, MultiLabels
from birdclef.data.metadata import Metadata, load_metadata, load_soundscape_labels
from birdclef.data.pseudo import PseudoSpec, pseudo_windows, read_pseudo
from birdclef.data.samplers import (
    EpochRedrawSampler,
    EpochSeededSampler,
    LoaderSpec,
    class_balanced_sampler,
)
from birdclef.data.splits import SplitSpec
from birdclef.data.teacher_inputs import TeacherInputs
from birdclef.data.windows import WindowSpec

log = logging.getLogger(__name__)

BAD_EXAMPLES = 3  # unreadable files quoted in an error message


class BirdclefDataModule(DataModuleCaches, L.LightningDataModule):
    """Competition-layout folder -> cached frames -> windows cut at read time -> dict batches.

    Built from `conf/data/default.yaml`, whose parts are one setting object each: `cache`
    (`CacheSpec`), `split` (`SplitSpec`), `windows` (`WindowSpec`), `loader` (`LoaderSpec`) and
    `pseudo` (`PseudoSpec`). The front end, label rule and training-data filter are passed in
    as objects; it hands `classes` and `output_names` to the LightningModule so nothing
    mutates the config. With `teacher` (`TeacherInputs`, distillation) the training recordings
    are also cached with the teacher's front end and training items carry `teacher_features`
    (pseudo-labelled windows too). With `pseudo.labels`, round(pseudo.ratio x labelled windows)
    pseudo-labelled windows join the training set (`fit_set`); validation and test stay
    labelled only. The caches are `DataModuleCaches`' (datamodule_caches).
    """

    def __init__(
        self,
        root: str | Path,
        frontend,
        labels: InformedLabels | MultiLabels | None = None,
        train_filter=None,
        cache: Mapping | None = None,
        split: Mapping | None = None,
        windows: Mapping | None = None,
        loader: Mapping | None = None,
        pseudo: Mapping | None = None,
        seed: int = 0,
        test: bool = True,
        background: bool = False,
        teacher: TeacherInputs | None = None,
    ) -> None:
        super().__init__()
        self.root, self.frontend, self.seed, self.test = Path(root), frontend, seed, test
        self.cache_spec = CacheSpec(**dict(cache or {}))
        self.split_spec = SplitSpec(**dict(split or {}))
        self.window_spec = WindowSpec(**dict(windows or {}))
        self.loader_spec = LoaderSpec(**dict(loader or {}))
        self.pseudo_spec = PseudoSpec(**dict(pseudo or {}))
        self.window_samples = self.window_spec.samples(frontend)
        self.label_rule = labels or InformedLabels()
        self.train_filter = train_filter or NoFilter()
        self.background, self.teacher = background, teacher
        self.meta: Metadata | None = None
        self.pseudo_set: WindowDataset | None = None
        self.pseudo_draws = 0  # pseudo windows an epoch reads (set with pseudo_set)
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
        is_val = self.split_spec.validation(usable, self.seed)
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
        w = self.window_spec
        self.train_set = recording_windows(
            frames, train, w.train, self.label_rule, self.classes, self.window_samples,
            self.frontend.finish, w.crop, w.crop_seconds, kept,
        )  # fmt: skip
        if self.teacher is not None:
            self.train_set.teacher = TeacherFrames(
                self._train_frames(self.teacher.frontend), self.teacher.frontend.finish,
                frames, self.train_set.n_frames,
                self.teacher.allowed(frames, needed=self.train_set.recording),
            )  # fmt: skip
        if self.background:
            self.train_set.background = self._background_frames()
            self.bad_files = pd.concat(
                [self.bad_files, self.train_set.background.bad], ignore_index=True
            )
        self.pseudo_set = self._pseudo_set() if self.pseudo_spec.active else None
        self.val_set = recording_windows(  # always the fixed windows, comparable across runs
            frames, usable[is_val], w.val, self.label_rule, self.classes, self.window_samples,
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
        p = self.pseudo_spec
        rows = read_pseudo(p.labels, self.classes, p.min_confidence)
        frames = self._soundscape_frames()
        if frames is None:
            raise DataError(
                f"data.pseudo.labels needs the soundscapes in {self.root / 'train_soundscapes'}, "
                "and there are none; use the data root the labels were made from."
            )
        if not self.background:  # else already reported with the background crops
            self.bad_files = pd.concat([self.bad_files, frames.bad], ignore_index=True)
        self.pseudo_draws = round(p.ratio * len(self.train_set))
        count = max(self.pseudo_draws, len(rows)) if p.redraw else self.pseudo_draws
        pseudo = pseudo_windows(
            frames, rows, self.classes, self.output_names, self.label_rule.activation,
            p.power, self.window_samples, self.frontend.finish, count, self.seed,
            p.frames, p.labels, p.threshold, p.confidence_weight,
        )  # fmt: skip
        pseudo.background = self.train_set.background
        if p.confidence_weight:  # labelled windows weigh 1, pseudo ones their top score
            self.train_set.weight = np.ones(len(self.train_set), dtype=np.float32)
        if self.teacher is not None:  # distillation: the teacher hears them too
            pseudo.teacher = TeacherFrames(
                self._soundscape_frames(self.teacher.frontend), self.teacher.frontend.finish,
                frames, pseudo.n_frames, self.teacher.allowed(frames),
            )  # fmt: skip
        return pseudo

    @property
    def fit_set(self) -> Dataset:
        """What training draws from: the labelled windows, then the pseudo windows if any."""
        if self.pseudo_set is None or len(self.pseudo_set) == 0:
            return self.train_set
        return ConcatDataset([self.train_set, self.pseudo_set])

    def _soundscape_set(self) -> WindowDataset | None:
        solution = load_soundscape_labels(self.root, self.classes) if self.test else None
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
    def train_dataloader(self) -> DataLoader:
        if self.loader_spec.sampler == "balanced":
            return self.loader_spec.loader(self.fit_set, sampler=self.balanced_sampler())
        if self.redraws:
            sampler = EpochRedrawSampler(
                len(self.train_set), len(self.pseudo_set), self.pseudo_draws, self.seed
            )
            return self.loader_spec.loader(self.fit_set, sampler=sampler)
        return self.loader_spec.loader(self.fit_set, shuffle=True)

    @property
    def redraws(self) -> bool:
        """True when each epoch reads only some of the pseudo windows (`pseudo.redraw`)."""
        return self.pseudo_set is not None and len(self.pseudo_set) > self.pseudo_draws

    def balanced_sampler(self) -> EpochSeededSampler:
        """The training windows' `class_balanced_sampler` (pseudo windows last), data.loader.balance_power."""
        return class_balanced_sampler(
            self.train_set.primary, len(self.classes), len(self.fit_set), self.loader_spec.balance_power,
            self.seed, self.pseudo_draws if self.redraws else None,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return self.loader_spec.loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise DataError(f"no soundscape_labels.csv under {self.root}: nothing to test on.")
        return self.loader_spec.loader(self.test_set)
