"""PooledLinear: the floor of every model table, a logistic regression on per-band statistics."""

from __future__ import annotations

import torch
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import EPS


class RunningStandardize(nn.Module):
    """Standardise each input column with its mean and variance over every training row seen.

    Unlike a BatchNorm, training and evaluation apply the same affine map (the current
    estimate), so the model stays exactly linear in its input in both modes, and a
    batch of one window is fine. The estimate is the exact pooled mean and variance
    (Chan's parallel update), so after one epoch it is the training set's standardisation.
    """

    def __init__(self, n_columns: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_columns))
        self.register_buffer("var", torch.ones(n_columns))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float()
        n_new = float(x.shape[0])
        mean_new, var_new = x.mean(dim=0), x.var(dim=0, correction=0)
        n_old = float(self.count)
        total = n_old + n_new
        delta = mean_new - self.mean
        self.var.copy_(
            (n_old * self.var + n_new * var_new + delta**2 * (n_old * n_new / total)) / total
        )
        self.mean.add_(delta * (n_new / total))
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(x)
        return (x - self.mean) / torch.sqrt(self.var + EPS)


def band_statistics(x: torch.Tensor, n_features: int) -> torch.Tensor:
    """[B, 1, F, T] -> [B, 2F]: each band's mean over time, then each band's std."""
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != n_features:
        raise ConfigError(
            f"the model was built for features [batch, 1, {n_features}, frames] (its front end's "
            f"bands) but got {list(x.shape)}: give it features of the frontend it was built with."
        )
    x = x.squeeze(1).float()
    return torch.cat([x.mean(dim=-1), x.std(dim=-1, correction=0)], dim=-1)


class PooledLinear(nn.Module):
    """Features [B, 1, F, T] -> each band's mean and std over time (2F statistics)
    -> running standardisation -> one nn.Linear -> logits [B, num_classes].

    No hidden layer, no dropout: what a linear read-out of the spectrum's average
    shape and variability reaches, for the other nets to beat. `n_features` is the front
    end's band count. The train task fits it to convergence (`birdclef.modules.linear_fit`),
    so a table's floor row is the best such a read-out does, not an underfit one.
    """

    input_size_arg = "n_features"  # derived from the front end (birdclef.models.build)
    closed_form = True  # fitted to convergence (birdclef.modules.linear_fit), not by epochs

    def __init__(self, num_classes: int, n_features: int = 128) -> None:
        super().__init__()
        if n_features < 1 or num_classes < 1:
            raise ConfigError(
                f"n_features={n_features} (the front end's bands) and num_classes={num_classes} must be >= 1."
            )
        self.n_features = n_features
        self.norm = RunningStandardize(2 * n_features)
        self.head = nn.Linear(2 * n_features, num_classes)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        return band_statistics(x, self.n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.statistics(x)))
