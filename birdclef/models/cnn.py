"""CNN: the study's deeper from-scratch CNN, VGG-like, on one log-mel window."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import build_input_norm, build_pool, conv_block


class CNN(nn.Module):
    """Blocks of `convs_per_block` x (3x3 conv, BN, ReLU) then 2x2 max pooling, one block per
    width in `channels`; global mean+max pool, dropout, linear head.

    Unlike MelCNN the first block runs at full resolution (no strided stem), as in VGG.
    """

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        convs_per_block: int = 2,
        dropout: float = 0.3,
        input_norm: str = "window",
        freq_bins: int = 0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or min(channels) < 1 or convs_per_block < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                f"model.channels={channels} and model.convs_per_block={convs_per_block} must be "
                f"positive and model.dropout={dropout} in [0, 1)."
            )
        widths = [1, *channels]
        self.norm = build_input_norm(input_norm)
        self.features = nn.Sequential(
            *(conv_block(a, b, convs=convs_per_block) for a, b in pairwise(widths))
        )
        self.pool, per_channel = build_pool(freq_bins)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(widths[-1] * per_channel, num_classes)
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.norm(mel))))
