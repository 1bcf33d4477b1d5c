"""Building blocks shared by the networks."""

from __future__ import annotations

import functools

import torch
from torch import nn

from birdclef.errors import ConfigError

EPS = 1e-5


class Standardize(nn.Module):
    """Per-window standardisation of a dB image: zero mean, unit variance over (features, frames).

    Keeps the nets independent of recording level and of the dB reference.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True)
        return (x - mean) / (std + EPS)


INPUT_NORMS = ("window", "dataset")


def build_input_norm(kind: str) -> nn.Module:
    """How a net normalises its input features.

    `window`: per-window standardisation (level-free: a quiet and a loud call look the
    same); `dataset`: one mean and variance learned over the training data (BatchNorm on
    the single input channel), so a window's level and contrast survive.
    """
    if kind == "window":
        return Standardize()
    if kind == "dataset":
        return nn.BatchNorm2d(1)
    raise ConfigError(f"model.input_norm={kind!r} must be one of {INPUT_NORMS}.")


def conv_block(
    c_in: int, c_out: int, convs: int = 1, pool: int | tuple[int, int] = 2
) -> nn.Sequential:
    """`convs` x (3x3 conv, batch norm, ReLU), then max pooling."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.MaxPool2d(pool))
    return nn.Sequential(*layers)


class MeanMaxPool(nn.Module):
    """Global pooling: mean plus max over (features, frames) -> [B, channels]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1)) + x.amax(dim=(-2, -1))


@functools.lru_cache(maxsize=32)
def _band_weights(n: int, bins: int) -> torch.Tensor:
    # a normal tensor even when first built under inference mode, so a later trace can use it
    with torch.inference_mode(False):
        weights = torch.zeros(bins, n)
        for i in range(bins):
            lo, hi = (i * n) // bins, ((i + 1) * n + bins - 1) // bins
            weights[i, lo:hi] = 1.0 / (hi - lo)
    return weights


def band_average(x: torch.Tensor, bins: int) -> torch.Tensor:
    """[..., F, T] -> [..., bins, T]: mean over `bins` frequency bands, as `adaptive_avg_pool2d`.

    Written as a product with a fixed [bins, F] averaging matrix (band i covers rows
    floor(i F / bins) .. ceil((i + 1) F / bins)) built from plain integers, so the ONNX
    exporter records one constant instead of adaptive pooling it cannot resolve.
    """
    weights = _band_weights(int(x.shape[-2]), int(bins))
    return torch.matmul(weights.to(dtype=x.dtype, device=x.device), x)


class BandPool(nn.Module):
    """Pooling that keeps where in frequency a pattern sits: [B, C, F, T] -> [B, C * bins].

    The feature map is averaged into `bins` frequency bands, then mean+max pooled
    over time only. Global pooling (`MeanMaxPool`) throws the absolute frequency
    away, and a species' frequency band is one of its plainest cues.
    """

    def __init__(self, bins: int) -> None:
        super().__init__()
        if bins < 1:
            raise ConfigError(f"model.freq_bins={bins} must be >= 1 (0 = global pooling).")
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = band_average(x, self.bins)
        return (x.mean(dim=-1) + x.amax(dim=-1)).flatten(1)


def build_pool(freq_bins: int) -> tuple[nn.Module, int]:
    """The pooling before a CNN's head and how many features per channel it gives."""
    if freq_bins == 0:
        return MeanMaxPool(), 1
    return BandPool(freq_bins), freq_bins
