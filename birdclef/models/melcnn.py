"""MelCNN: the study's small CNN on one log-mel window."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import band_average, build_input_norm, build_pool, conv_block
from birdclef.models.linear import RunningStandardize, band_statistics


class MelCNN(nn.Module):
    """A strided conv stem, then conv blocks (conv-BN-ReLU-maxpool), mean+max pooling (global, or over time
    within `freq_bins` frequency bands), linear head.

    The stem halves both axes with a stride-2 convolution instead of conv + pool at
    full resolution: the same output size at 60 % of the CPU time.
    """

    def __init__(
        self,
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.2,
        input_norm: str = "window",
        freq_bins: int = 0,
        band_stats: int = 0,
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
        self.pool, per_channel = build_pool(freq_bins)
        # the linear floor's input beside the CNN's: each band's mean and std over time
        if band_stats < 0:
            raise ConfigError(f"model.band_stats={band_stats} must be >= 0 (0 = off).")
        self.band_stats = band_stats
        self.stats = RunningStandardize(2 * band_stats) if band_stats else None
        width = widths[-1] * per_channel + 2 * band_stats
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.features(self.norm(features)))
        if self.stats is not None:
            bands = band_average(features, self.band_stats)
            stats = self.stats(band_statistics(bands, self.band_stats))
            pooled = torch.cat([pooled, stats], dim=-1)
        return self.head(pooled)
