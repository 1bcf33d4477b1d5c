"""Any timm image backbone on the 1-channel log-mel: global pooling, dropout, a linear head."""

from __future__ import annotations

import torch
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import build_input_norm
from birdclef.models.weights import BACKBONE, classifier_names, create_backbone, load_weights

GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax")  # timm's SelectAdaptivePool2d types


def check_common(pretrained: bool, weights: str | None, drop_rate: float, drop_path_rate: float):
    """The settings the timm-backed nets share."""
    if pretrained and weights:
        raise ConfigError(
            "model.pretrained=true and model.weights are both set: pick one source of weights."
        )
    if not 0 <= drop_rate < 1 or not 0 <= drop_path_rate < 1:
        raise ConfigError(
            f"model.drop_rate={drop_rate} and model.drop_path_rate={drop_path_rate} must be in [0, 1)."
        )


def drop_path(drop_path_rate: float) -> dict[str, float]:
    """Stochastic depth as a timm kwarg, passed only when on: not every timm model takes it."""
    return {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}


class TimmNet(nn.Module):
    """Per-window standardisation, then a timm model with `in_chans=1` and its own head.

    The head (timm's global pooling, dropout `drop_rate`, linear layer) is sized to
    `num_classes`; pretrained weights fill everything else (see birdclef.models.weights).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "efficientnet_b0",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        input_norm: str = "window",
    ) -> None:
        super().__init__()
        check_common(pretrained, weights, drop_rate, drop_path_rate)
        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"model.global_pool={global_pool!r} must be one of {GLOBAL_POOLS}.")
        self.norm = build_input_norm(input_norm)
        self.backbone = create_backbone(
            backbone,
            pretrained,
            num_classes=num_classes,
            drop_rate=drop_rate,
            global_pool=global_pool,
            **drop_path(drop_path_rate),
        )
        if weights:
            head = [f"{BACKBONE}.{name}" for name in classifier_names(self.backbone)]
            load_weights(self, weights, head=head)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.norm(mel))
