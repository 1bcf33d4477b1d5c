"""Resampling in numpy alone: torchaudio's windowed-sinc resampler, so training and submission agree.

`resample` computes what `torchaudio.functional.resample` computes with its defaults
(`sinc_interp_hann`, 6 zero crossings, rolloff 0.99), to float32 rounding, without torch or
scipy: the training side (`birdclef.data.audio`) and the offline bundle read audio that is not
at 32 kHz alike.
"""

from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 6  # lowpass_filter_width: sinc lobes on each side
ROLLOFF = 0.99  # the cutoff, as a share of the lower Nyquist frequency
BLOCKS = 4096  # output blocks computed at once (bounds memory on long files)


def sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Kernels [new, 2 width + orig] for rates already divided by their gcd, and `width`."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float32)[None, :] / np.float32(orig)
    t = (np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new) + idx) * np.float32(
        base
    )
    t = np.clip(t, -ZERO_CROSSINGS, ZERO_CROSSINGS)
    window = np.cos(t * math.pi / ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    return (sinc * window * (base / orig)).astype(np.float32), width


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 `wave` from `rate` to `target` Hz (ceil(len x target / rate) samples)."""
    if rate == target:
        return np.asarray(wave, dtype=np.float32)
    g = math.gcd(int(rate), int(target))
    orig, new = int(rate) // g, int(target) // g
    kernel, width = sinc_kernel(orig, new)
    length = len(wave)
    padded = np.pad(np.asarray(wave, dtype=np.float32), (width, width + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = np.concatenate(
        [(frames[i : i + BLOCKS] @ kernel.T).reshape(-1) for i in range(0, len(frames), BLOCKS)]
    )
    return out[: math.ceil(new * length / orig)].astype(np.float32)
