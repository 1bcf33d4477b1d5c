"""The frame caches the DataModule builds and reads: train_audio, test and train soundscapes.

`DataModuleCaches` is a mixin of `BirdclefDataModule` (birdclef.data.datamodule) and holds
its Lightning hook `prepare_data`. Its methods read the module's settings (`root`,
`cache_spec`, `frontend`, `train_filter`, `background`, `pseudo_spec`, `teacher`), its
`classes` and metadata (`_metadata`), and keep the window
manifests in `window_manifests`. With a `frontend` argument, a cache is built with that
front end (a distillation teacher's) instead of the module's own.
"""

from __future__ import annotations

from birdclef.core.errors import DataError
from birdclef.data.cache import CachedFrames, FrameCache
from birdclef.data.metadata import load_soundscape_labels


class DataModuleCaches:
    """The DataModule's caches, each built (or found built) on first use; see the module doc."""

    def prepare_data(self) -> None:
        """Build every cache this run reads; `setup` then opens them.

        Each process may run it (under DDP every rank does): builders of one cache take
        its file lock in turn, so one process builds and the others find it built.
        """
        self._train_frames()
        if self.teacher is not None:
            self._train_frames(self.teacher.frontend)
        solution = load_soundscape_labels(self.root, self.classes) if self.test else None
        if solution is not None:
            self._scored_frames(sorted(solution["stem"].unique()))
        if self.background:
            self._background_frames()
        if self.pseudo_spec.active:
            self._soundscape_frames()
            if self.teacher is not None:
                self._soundscape_frames(self.teacher.frontend)
        if hasattr(self.train_filter, "manifests"):
            self._manifests()

    def _cache(self, frontend=None) -> FrameCache:
        return FrameCache(
            self.cache_spec.dir,
            frontend if frontend is not None else self.frontend,
            self.cache_spec.workers,
        )

    def _frames(self, paths, keys, groups, desc: str, frontend=None) -> CachedFrames:
        return self._cache(frontend).build(paths, keys, groups, desc)

    def train_frames(self) -> CachedFrames:
        """The train_audio frames of the module's front end (built on first use)."""
        return self._train_frames()

    def verify_train_frames(self, count: int, seed: int) -> tuple[int, list[str]]:
        """`FrameCache.verify` of the train_audio frames: (shards checked, those that differ)."""
        return self._cache().verify(*self._metadata().train_files(), count, seed)

    def _train_frames(self, frontend=None) -> CachedFrames:
        desc = "caching train_audio" + (" (teacher)" if frontend is not None else "")
        return self._frames(*self._metadata().train_files(), desc, frontend)

    def _manifests(self) -> dict:
        """A window filter's detector scores of every train_audio file (built once, cached)."""
        if self.window_manifests is None:
            self.window_manifests = self.train_filter.manifests(
                *self._metadata().train_files(), self.cache_spec.dir, self.frontend.sample_rate,
                self.cache_spec.workers,
            )  # fmt: skip
        return self.window_manifests

    def _scored_frames(self, stems: list[str]) -> CachedFrames:
        """The labelled test soundscapes, whose 5-s rows are cut from their frames."""
        paths = [self.root / "test_soundscapes" / f"{s}.ogg" for s in stems]
        return self._frames(
            paths, stems, ["test_soundscapes"] * len(stems), "caching test_soundscapes"
        )

    def _soundscape_frames(self, frontend=None) -> CachedFrames | None:
        """train_soundscapes (background crops and pseudo-labelled windows; with `frontend`, a
        distillation teacher's features of them); None if absent."""
        paths = sorted((self.root / "train_soundscapes").glob("*.ogg"))
        desc = "caching train_soundscapes" + (" (teacher)" if frontend is not None else "")
        return self._frames(
            paths, [p.stem for p in paths], ["train_soundscapes"] * len(paths), desc, frontend
        ) if paths else None  # fmt: skip

    def _background_frames(self) -> CachedFrames:
        """train_soundscapes, cropped at random for background augmentation."""
        frames = self._soundscape_frames()
        if frames is None or frames.index.empty:
            raise DataError(
                f"background augmentation needs readable soundscapes in {self.root / 'train_soundscapes'}, "
                "and there are none; set augment.background_p=0 or use augment=none."
            )
        return frames
