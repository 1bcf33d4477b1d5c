"""Building blocks shared by the networks."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from birdclef.core.errors import ConfigError

EPS = 1e-5


class Standardize(nn.Module):
    """Per-window standardisation of a dB image: zero mean, unit variance over (features, frames).

    Keeps the nets independent of recording level and of the dB reference.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True)
        return (x - mean) / (std + EPS)


class PCEN(nn.Module):
    """Per-channel energy normalisation of a dB image (Wang et al. 2017; librosa's defaults).

    Each band's power is divided by its own smoothed past (an exponential moving average
    with `time_constant`, as a causal FIR filter that exports to ONNX: one matrix product
    for windows, a convolution for inputs over `MATRIX_FRAMES`), then
    compressed: `(E / (eps + M)^gain + bias)^power - bias^power`. Stationary background
    (rain, insects, hum) flattens towards a constant while onsets stand out, whatever the
    recording's level. `frame_seconds` is the front end's hop in seconds: the default
    front end's (500 samples at 32 kHz); with `frontend=mel_fast` (hop 1000) the smoother
    spans twice the time.
    """

    def __init__(
        self,
        frame_seconds: float = 500 / 32000,
        time_constant: float = 0.4,
        gain: float = 0.98,
        bias: float = 2.0,
        power: float = 0.5,
        eps: float = 1e-12,  # below the front end's power floor (-100 dB), so level barely matters
    ) -> None:
        super().__init__()
        frames = time_constant / frame_seconds
        s = (math.sqrt(1 + 4 * frames**2) - 1) / (2 * frames**2)  # librosa's smoothing coefficient
        # until the weight falls to 1e-6, so that even a call 60 dB above the background
        # fades from the smoother as it would from the recursive one
        taps = max(1, math.ceil(math.log(1e-6) / math.log(1 - s)))
        kernel = s * (1 - s) ** torch.arange(taps, dtype=torch.float32)
        # the newest frame's weight sits last (as a convolution would correlate it)
        self.register_buffer("kernel", (kernel / kernel.sum()).flip(0).view(1, 1, 1, taps))
        self.gain, self.bias, self.power, self.eps = gain, bias, power, eps
        self._smoothers: dict[tuple, torch.Tensor] = {}

    # above this many frames (16 s at the default hop) the matrix (frames^2 weights) costs
    # more than the convolution (frames x taps): long inputs take the convolution
    MATRIX_FRAMES = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.pow(10.0, x / 10.0)
        if energy.shape[-1] <= self.MATRIX_FRAMES:
            smooth = energy @ self.smoother(energy.shape[-1])
        else:
            taps = self.kernel.shape[-1]
            padded = nn.functional.pad(energy, (taps - 1, 0, 0, 0), mode="replicate")
            smooth = nn.functional.conv2d(padded, self.kernel)
        ratio = energy / (self.eps + smooth) ** self.gain
        return (ratio + self.bias) ** self.power - self.bias**self.power

    def smoother(self, frames: int) -> torch.Tensor:
        """The filter as a [frames, frames] matrix: `energy @ smoother` is the smoothed energy.

        Column t holds the weights of frames t, t-1, ... (the newest last in `kernel`); the
        frames before the first count as copies of it (replicate padding, as librosa's
        initial state), so their weights add to row 0. On a CPU one matrix product is many
        times faster than the same filter as a 1 x taps convolution, with the same result
        to ~2e-5 (`benchmarks/pcen_speed.py`). Built once per length outside tracing; an
        exported graph computes it from `kernel` at run time instead of storing it.
        """
        key = (frames, self.kernel.device, self.kernel.dtype)
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if not tracing and key in self._smoothers:
            return self._smoothers[key]
        # a normal tensor even when built under inference mode (validation, scoring), so that
        # a later training step can use it
        with torch.inference_mode(False):
            weights = self.kernel.flatten().flip(0)  # weights[k]: the frame k frames back
            taps = weights.shape[0]
            t = torch.arange(frames, device=weights.device)
            lag = t.view(1, -1) - t.view(-1, 1)  # [source frame, output frame]
            zero = weights.new_zeros(())
            matrix = torch.where((lag >= 0) & (lag < taps), weights[lag.clamp(0, taps - 1)], zero)
            # the weight of the padding more than t frames back, for output frame t
            before = weights.sum() - torch.cumsum(weights, 0)
            padding = torch.where(t < taps - 1, before[t.clamp(max=taps - 1)], zero)
            matrix = torch.cat([matrix[:1] + padding, matrix[1:]])
        if not tracing:
            self._smoothers = {key: matrix}  # one length at a time: the windows' own
        return matrix

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._smoothers = {}  # a loaded kernel replaces the one the matrices were built from
        super()._load_from_state_dict(*args, **kwargs)


INPUT_NORMS = ("window", "dataset", "pcen")


def build_input_norm(kind: str) -> nn.Module:
    """How a net normalises its input features.

    `window`: per-window standardisation (level-free: a quiet and a loud call look the
    same); `dataset`: one mean and variance learned over the training data (BatchNorm on
    the single input channel), so a window's level and contrast survive; `pcen`: per-channel
    energy normalisation (`PCEN`, background flattened, onsets kept), then `dataset`.
    """
    if kind == "window":
        return Standardize()
    if kind == "dataset":
        return nn.BatchNorm2d(1)
    if kind == "pcen":
        return nn.Sequential(PCEN(), nn.BatchNorm2d(1))
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
    # built in numpy, so that a trace that builds it records one constant, not `bins`
    # slice assignments (~5,000 ONNX nodes for the default net's 128 + 8 bands)
    weights = np.zeros((bins, n), dtype=np.float32)
    for i in range(bins):
        lo, hi = (i * n) // bins, ((i + 1) * n + bins - 1) // bins
        weights[i, lo:hi] = 1.0 / (hi - lo)
    # a normal tensor even when first built under inference mode, so a later trace can use it
    with torch.inference_mode(False):
        return torch.from_numpy(weights)


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
