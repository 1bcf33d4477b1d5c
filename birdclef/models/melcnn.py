"""MelCNN: the study's small CNN on one log-mel window."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from birdclef.errors import ConfigError
from birdclef.models.layers import MeanMaxPool, build_input_norm, conv_block


class MelCNN(nn.Module):
    """A strided conv stem, then conv blocks (conv-BN-ReLU-maxpool), global mean+max pool, linear head.

    The stem halves both axes with a stride-2 convolution instead of conv + pool at
    full resolution: the same output size at 60 % of the CPU time.
    """

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.2,
        input_norm: str = "window",
    ) -> None:
        super().__init__()
        if not channels or min(channels) < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                f"model.channels={list(channels)} must be positive and model.dropout={dropout} in [0, 1)."
            )
        widths = [1, *channels]
        self.norm = build_input_norm(input_norm)
        stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.features = nn.Sequential(
            stem, *(conv_block(a, b) for a, b in zip(widths[1:], widths[2:], strict=False))
        )
        self.pool = MeanMaxPool()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], num_classes))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.norm(mel))))
