"""Learning-rate schedules sized from the trainer's step count."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from birdclef.errors import ConfigError


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1, min_lr_ratio: float = 0.01
) -> LambdaLR:
    """Linear warm-up over `warmup_fraction` of `total_steps`, then cosine decay to `min_lr_ratio`."""
    if not 0 <= warmup_fraction < 1 or not 0 <= min_lr_ratio <= 1:
        raise ConfigError(
            f"optim.scheduler warmup_fraction={warmup_fraction} must be in [0, 1) and min_lr_ratio={min_lr_ratio} in [0, 1]."
        )
    total = max(1, int(total_steps))
    warmup = int(warmup_fraction * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
