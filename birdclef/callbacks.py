"""Small Lightning callbacks the tasks attach to every run."""

from __future__ import annotations

import time

import lightning as L
import numpy as np


class EpochTimer(L.Callback):
    """Wall time of each training epoch (seconds), for the model comparison tables."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)

    @property
    def median(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")
