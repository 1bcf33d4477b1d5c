"""Learning-rate schedules sized from the trainer's step count, and how they resume."""

from __future__ import annotations

import logging
import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from birdclef.core.errors import ConfigError

log = logging.getLogger(__name__)

RESUME_MODES = ("continue", "stretch")


class WarmupCosine(LRScheduler):
    """Linear warm-up over `warmup_fraction` of `total_steps`, then cosine decay to `min_lr_ratio`.

    The multiplier of the peak lr at optimizer step s is (s + 1) / (warmup + 1) during
    warm-up, then min_lr_ratio + (1 - min_lr_ratio) (1 + cos(pi p)) / 2, with the progress
    p running from `anchor_progress` at `anchor_step` to 1 at `total_steps` (0 at the end
    of warm-up for a fresh schedule), and staying at 1 after it.

    The schedule's shape is part of its state, so a run resumed from a checkpoint with
    another length (a larger `trainer.max_epochs`) never jumps; `resume` says what it does:
    - `continue`: the schedule the checkpoint was on, as it was built; past its original
      end the lr stays at its floor (min_lr_ratio x peak).
    - `stretch`: the rest of the cosine spread from the resumed step to this run's
      `total_steps`, starting at the multiplier where it stopped (a warm-up in progress
      finishes at its original length first).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: float,
        warmup_fraction: float = 0.1,
        min_lr_ratio: float = 0.01,
        resume: str = "continue",
    ) -> None:
        if not 0 <= warmup_fraction < 1 or not 0 <= min_lr_ratio <= 1:
            raise ConfigError(
                f"optim.scheduler warmup_fraction={warmup_fraction} must be in [0, 1) and min_lr_ratio={min_lr_ratio} in [0, 1]."
            )
        if resume not in RESUME_MODES:
            raise ConfigError(f"optim.scheduler.resume={resume!r} must be one of {RESUME_MODES}.")
        if not math.isfinite(total_steps):
            raise ConfigError(
                "optim.scheduler needs a finite number of steps: set trainer.max_epochs or trainer.max_steps."
            )
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_fraction * self.total_steps)
        self.min_lr_ratio, self.resume = min_lr_ratio, resume
        self.anchor_step, self.anchor_progress = self.warmup_steps, 0.0
        super().__init__(optimizer)

    def progress(self, step: int) -> float:
        """Share of the cosine done at `step`, in [0, 1]."""
        span = max(1, self.total_steps - self.anchor_step)
        done = self.anchor_progress + (1 - self.anchor_progress) * (step - self.anchor_step) / span
        return min(1.0, max(0.0, done))

    def factor(self, step: int) -> float:
        """The lr multiplier (of the peak lr) at optimizer step `step`."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress(step)))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the schedule the checkpoint was on, then apply `resume` for this run's length."""
        planned, mode = self.total_steps, self.resume
        legacy = "total_steps" not in state_dict
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "lr_lambdas"})
        self.resume = mode  # this run's choice, not the checkpoint's
        if legacy:  # a LambdaLR state from before schedules kept their shape
            log.warning(
                "the checkpoint's lr schedule does not record its length; it is rebuilt for this run "
                "(%d steps), so the lr may jump at the resumed step %d.", planned, self.last_epoch,
            )  # fmt: skip
        elif mode == "stretch" and planned != self.total_steps:
            step = max(self.last_epoch, self.warmup_steps)
            self.anchor_progress, self.anchor_step = self.progress(step), step
            self.total_steps = planned


def build_optimizers(params, optim, total_steps: int):
    """The `optim` group's optimizer on `params`, with its scheduler stepped every batch if any.

    `optim.optimizer` and `optim.scheduler` are `_partial_` configs; the scheduler gets the
    run's length (`trainer.estimated_stepping_batches`). Returns what Lightning's
    `configure_optimizers` returns.
    """
    from hydra.utils import instantiate

    try:
        optimizer = instantiate(optim["optimizer"])(params=params)
    except ValueError as err:  # torch validates lr, betas, weight_decay, ...
        raise ConfigError(f"optim.optimizer: {err}") from err
    if not optim.get("scheduler"):
        return optimizer
    scheduler = instantiate(optim["scheduler"])(optimizer=optimizer, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def budget_epochs(optim, steps_per_epoch: int) -> int:
    """Epochs of the `optim` group's budget: enough for `min_steps` optimizer steps, at least
    `min_epochs`, at most `max_epochs` (a small set trains more epochs, a large one fewer)."""
    low, high, steps = int(optim["min_epochs"]), int(optim["max_epochs"]), int(optim["min_steps"])
    if not 1 <= low <= high or steps < 0:
        raise ConfigError(
            f"optim.min_epochs={low} must be >= 1 and <= optim.max_epochs={high}, and "
            f"optim.min_steps={steps} >= 0."
        )
    return min(high, max(low, math.ceil(steps / max(steps_per_epoch, 1))))
