"""What a distillation student's training items carry of its teachers (task=distill).

`TeacherInputs` holds the teachers' front end (their features are cached beside the
student's) and, for cross-fitted teachers, the recordings each teacher trained on, from which
`allowed` says which teachers may score which recording's windows.
"""

from __future__ import annotations

import numpy as np

from birdclef.core.errors import ConfigError
from birdclef.data.cache import CachedFrames


class TeacherInputs:
    """A plain class, not a dataclass: Hydra's `instantiate` would turn a dataclass argument
    into a config."""

    def __init__(self, frontend, trained_on: list[set[str]] | None = None) -> None:
        self.frontend = frontend  # the teachers' front end: items also carry `teacher_features`
        self.trained_on = trained_on  # cross-fitting: each teacher's training recordings

    def allowed(self, frames: CachedFrames, needed: np.ndarray | None = None) -> np.ndarray | None:
        """[recordings of `frames`, teachers]: which teachers may score each recording's windows.

        Cross-fitted teachers: those that did not train on the recording; every teacher for
        recordings none trained on (soundscapes: `needed=None`). None without cross-fitting.
        Each recording in `needed` (positions in `frames`) needs at least one teacher.
        """
        if self.trained_on is None:
            return None
        files = frames.index["file"].tolist()
        everyone = needed is None
        allowed = np.array(
            [[everyone or f not in trained for trained in self.trained_on] for f in files],
            dtype=bool,
        ).reshape(len(files), len(self.trained_on))
        if not everyone:
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
