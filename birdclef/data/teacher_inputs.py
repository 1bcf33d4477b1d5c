"""What a distillation student's training items carry of its teachers (task=distill).

`TeacherInputs` holds the teachers' front end (their features are cached beside the
student's) and, for cross-fitted teachers, the recordings each teacher trained on, from which
`allowed` says which teachers may score which recording's windows. Soundscapes mixed from
training windows (`task=mix_train`) name their source recordings (`sources`): only teachers
that trained on none of them may score them.
"""

from __future__ import annotations

import numpy as np

from birdclef.core.errors import ConfigError
from birdclef.data.cache import CachedFrames


class TeacherInputs:
    """A plain class, not a dataclass: Hydra's `instantiate` would turn a dataclass argument
    into a config."""

    def __init__(
        self,
        frontend,
        trained_on: list[set[str]] | None = None,
        sources: dict[str, set[str]] | None = None,
    ) -> None:
        self.frontend = frontend  # the teachers' front end: items also carry `teacher_features`
        self.trained_on = trained_on  # cross-fitting: each teacher's training recordings
        self.sources = sources or {}  # a mixed soundscape's stem -> the recordings mixed into it

    def allowed(self, frames: CachedFrames, needed: np.ndarray | None = None) -> np.ndarray | None:
        """[recordings of `frames`, teachers]: which teachers may score each recording's windows.

        Cross-fitted teachers: those that did not train on the recording. Soundscapes
        (`needed=None`): those that trained on none of the recordings mixed into it, every
        teacher for one that names none. None without cross-fitting. Each recording in
        `needed` (positions in `frames`) needs at least one teacher.
        """
        if self.trained_on is None:
            return None
        files = frames.index["file"].tolist()
        everyone = needed is None

        def may(file: str, trained: set[str]) -> bool:
            if everyone:
                return not (self.sources.get(file, set()) & trained)
            return file not in trained

        allowed = np.array(
            [[may(f, trained) for trained in self.trained_on] for f in files], dtype=bool
        ).reshape(len(files), len(self.trained_on))
        if everyone:
            orphans = [f for f, row in zip(files, allowed, strict=True) if not row.any()]
            if orphans:
                raise ConfigError(
                    f"cross-fitted teachers: every teacher trained on a recording mixed into "
                    f"{orphans[0]} ({len(orphans)} soundscapes): mix each soundscape from one "
                    "teacher's held-out recordings (task=student does)."
                )
        else:
            orphans = [files[r] for r in np.unique(needed) if not allowed[r].any()]
            if orphans:
                raise ConfigError(
                    f"cross-fitted teachers: every teacher trained on {len(orphans)} of the "
                    f"student's training recordings, e.g. {orphans[0]}, so none can score them out "
                    "of fold. Train the teachers on folds (data.split.folds=K "
                    "data.split.fold=0..K-1, one seed for all K) or distil with "
                    "teacher.cross_fit=false."
                )
        return allowed
