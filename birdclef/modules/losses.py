"""Losses on logits [B, outputs] against soft targets [B, outputs].

Each loss names the `activation` that turns its logits into scores, so the module
scores softmax-trained and sigmoid-trained models the right way. Every loss takes an
optional `weight` [B]: the mean over the batch of weight x each window's loss
(`data.pseudo.confidence_weight`); without it, the plain mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from birdclef.core.errors import ConfigError


def weighted_mean(per_window: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The batch mean of per-window losses [B], each scaled by its `weight` [B] if given."""
    if weight is None:
        return per_window.mean()
    return (per_window * weight.to(per_window)).mean()


class FocalLoss(nn.Module):
    """The study's focal loss: softmax cross-entropy with each term scaled by (1 - p)^gamma.

    With soft targets t: L = -sum_c t_c (1 - p_c)^gamma log p_c, averaged over the
    batch; gamma = 0 is plain soft-target cross-entropy.
    """

    activation = "softmax"

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"loss.gamma={gamma} must be >= 0.")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        focus = (1.0 - log_p.exp()).pow(self.gamma)
        return weighted_mean(-(target * focus * log_p).sum(dim=-1), weight)


class SoftCrossEntropy(nn.Module):
    """Softmax cross-entropy against a target distribution (the study's CE loss)."""

    activation = "softmax"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        return weighted_mean(F.cross_entropy(logits.float(), target, reduction="none"), weight)


class BCELoss(nn.Module):
    """Per-class sigmoid binary cross-entropy: the multilabel loss of most top solutions."""

    activation = "sigmoid"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
        return weighted_mean(bce.mean(dim=-1), weight)


class FocalBCELoss(nn.Module):
    """Sigmoid focal loss (Lin et al.) with optional positive weighting `alpha`."""

    activation = "sigmoid"

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        if gamma < 0 or (alpha is not None and not 0 < alpha < 1):
            raise ConfigError(
                f"loss.gamma={gamma} must be >= 0 and loss.alpha={alpha} in (0, 1) or null."
            )
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_true = target * p + (1 - target) * (1 - p)
        loss = bce * (1 - p_true).pow(self.gamma)
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return weighted_mean(loss.mean(dim=-1), weight)
