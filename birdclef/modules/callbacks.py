"""Lightning callbacks: epoch timing and an exponential moving average of the weights."""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from birdclef.core.errors import ConfigError

log = logging.getLogger(__name__)


class EpochTimer(L.Callback):
    """Wall time of each training epoch (seconds), for the model comparison tables, and the part
    of it spent waiting for batches (from the end of one training step, or the epoch's start,
    to the start of the next: the loader's share when it cannot keep up).

    Every `log_seconds` of an epoch it logs a progress line (batch, batches/s, the share spent
    waiting for batches, the time left), so a long epoch shows progress in the run's log
    where no terminal shows a progress bar; 0 turns it off.
    """

    def __init__(self, log_seconds: float = 60.0) -> None:
        if log_seconds < 0:
            raise ConfigError(f"EpochTimer log_seconds={log_seconds} must be >= 0 (0: no lines).")
        self.log_seconds = log_seconds
        self.seconds: list[float] = []
        self.data_seconds: list[float] = []
        self._start = self._last = self._logged = 0.0
        self._waiting = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = self._last = self._logged = time.perf_counter()
        self._waiting = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._waiting += time.perf_counter() - self._last

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last = time.perf_counter()
        if self.log_seconds and self._last - self._logged >= self.log_seconds:
            self._logged = self._last
            total = getattr(trainer, "num_training_batches", math.inf)
            epoch = getattr(trainer, "current_epoch", 0)
            log.info(self.progress(epoch, batch_idx + 1, total))

    def progress(self, epoch: int, done: int, total: float) -> str:
        """One progress line: `done` of `total` batches of this epoch."""
        elapsed = max(self._last - self._start, 1e-9)
        known = math.isfinite(total) and total > 0
        share = f" ({100 * done / total:.0f} %)" if known else ""
        line = (
            f"epoch {epoch}: batch {done}{f'/{int(total)}' if known else ''}{share}, "
            f"{done / elapsed:.2f} batches/s, {100 * self._waiting / elapsed:.1f} % waiting for batches"
        )
        if known:
            line += f", about {(total - done) * elapsed / done / 60:.0f} min left in the epoch"
        return line

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.data_seconds.append(self._waiting)

    @property
    def median(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")

    @property
    def data_median(self) -> float:
        return float(np.median(self.data_seconds)) if self.data_seconds else float("nan")


class EMA(L.Callback):
    """Exponential moving average of the weights, used for validation and checkpoints.

    After each optimizer step the shadow copy moves towards the weights by
    1 - decay (with the usual warm-up, min(decay, (1 + step) / (10 + step)), so
    early averages are not dominated by the random init). With
    `trainer.accumulate_grad_batches` > 1 the batches that only accumulate gradients
    leave the weights unchanged and are not counted (the optimizer step is read
    from `trainer.global_step`). At validation the
    shadow weights are swapped in and stay in place while checkpoints are saved,
    so `best.ckpt` holds the averaged weights that were scored; the training
    weights come back at the next training batch. Both copies are part of the
    callback's checkpoint state, so a resumed run continues exactly.
    """

    def __init__(self, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay} must be in (0, 1).")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        self.backup: dict[str, torch.Tensor] | None = None
        self.steps = 0  # optimizer steps averaged so far
        self._global_step = 0  # trainer.global_step at the last update

    @staticmethod
    def _averaged(module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in module.state_dict().items() if v.dtype.is_floating_point}

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.shadow:
            self.shadow = {k: v.detach().clone() for k, v in self._averaged(pl_module).items()}
        device = pl_module.device  # a resumed state may have been loaded onto another device
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        if self.backup is not None:
            self.backup = {k: v.to(device) for k, v in self.backup.items()}

    def on_train_start(self, trainer, pl_module) -> None:
        self._global_step = trainer.global_step  # restored by now when resuming

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._global_step:  # gradients accumulated, no step taken
            return
        self._global_step = trainer.global_step
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for key, value in self._averaged(pl_module).items():
            self.shadow[key].lerp_(value.detach(), 1.0 - decay)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.backup is not None:
            pl_module.load_state_dict(self.backup, strict=False)
            self.backup = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        # only inside fit: `trainer.validate(ckpt_path=...)` scores the checkpoint's own weights
        fitting = trainer.state.fn == TrainerFn.FITTING
        if not fitting or trainer.sanity_checking or not self.shadow or self.backup is not None:
            return
        self.backup = {k: v.detach().clone() for k, v in self._averaged(pl_module).items()}
        pl_module.load_state_dict(self.shadow, strict=False)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "backup": self.backup, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.shadow, self.backup, self.steps = state["shadow"], state["backup"], state["steps"]
