"""Log-mel frames of a whole recording in numpy: the training cache's features without torch.

`LogMelFrames(frame_params)` computes what `birdclef.data.frontend.MelFrontend.frames`
computes (the same centred STFT, periodic Hann window, HTK mel filters and dB floor; tested
equal to ~1e-4 dB), from the `frame_params()` dict a model stores. scipy's FFT on float32 is
about 2.5x faster than torch's STFT on one core, and this module runs where torch is absent.

Two things keep a minute's frames cheap without changing them: the mel filters are applied
band by band (`MelBands`: each group of `MEL_GROUP` filters multiplies only the FFT bins it
covers, about a seventh of the dense product's work, the same sums less the zeros), and the
frames are stored mel-major, so cutting a window is a contiguous copy (`__call__` returns a
[T, n_mels] view of them).
"""

from __future__ import annotations

import time

import numpy as np

try:  # scipy's FFT keeps float32 and is faster; numpy's works everywhere
    from scipy import fft as _fft

    def _rfft(frames: np.ndarray) -> np.ndarray:
        return _fft.rfft(frames, axis=-1, workers=1)
except ImportError:  # pragma: no cover - scipy ships with the project, not with every bundle host

    def _rfft(frames: np.ndarray) -> np.ndarray:
        return np.fft.rfft(frames, axis=-1)


MEL_KINDS = ("log_mel_db",)  # frame kinds this module computes
FRAME_BLOCK = 128  # frames per FFT call: 1 MB blocks stay in L2 (256: ~5 % slower, 4096: 1.5x)
MEL_GROUP = 16  # mel filters per banded product (8: ~10 % slower, 32: ~40 %, dense: 4x)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """Triangular HTK mel filters [n_fft // 2 + 1, n_mels], unnormalised (torchaudio's default)."""
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    points = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(points)
    slopes = points[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


class MelBands:
    """`power [frames, bins] @ filters [bins, n_mels]`, each group of filters on its own bins.

    A triangular mel filter is non-zero on a few FFT bins (2 at 20 Hz, 50 at 16 kHz with a
    2048-point FFT), so the dense product mostly multiplies zeros. Groups of `group`
    consecutive filters multiply only the bins between their first and last non-zero one.
    """

    def __init__(self, filters: np.ndarray, group: int = MEL_GROUP) -> None:
        filters = np.asarray(filters, dtype=np.float32)
        self.n_bins, self.n_mels = filters.shape
        nonzero = filters != 0
        used = nonzero.any(axis=0)
        lows = np.where(used, nonzero.argmax(axis=0), 0)
        highs = np.where(used, self.n_bins - nonzero[::-1].argmax(axis=0), 0)
        self.groups = []
        for first in range(0, self.n_mels, group):
            last = min(first + group, self.n_mels)
            low, high = int(lows[first:last].min()), int(highs[first:last].max())
            high = max(high, low + 1)  # an all-zero group still gets a (zero) product
            block = np.ascontiguousarray(filters[low:high, first:last])
            self.groups.append((first, last, low, high, block))

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """[frames, n_mels] float32 mel power of `power` [frames, n_bins]."""
        out = np.empty((len(power), self.n_mels), dtype=np.float32)
        for first, last, low, high, block in self.groups:
            np.matmul(power[:, low:high], block, out=out[:, first:last])
        return out


class LogMelFrames:
    """A whole recording [samples] -> float32 dB frames [1 + samples // hop, n_mels]."""

    def __init__(self, params: dict) -> None:
        if params.get("kind") not in MEL_KINDS:
            raise ValueError(
                f"LogMelFrames computes {MEL_KINDS} frames, not {params.get('kind')!r}"
            )
        self.sample_rate = int(params["sample_rate"])
        self.n_fft, self.hop = int(params["n_fft"]), int(params["hop_length"])
        self.floor_db = float(params["floor_db"])
        self.pad_value = self.floor_db
        self.filters = mel_filterbank(
            self.sample_rate, self.n_fft, int(params["n_mels"]), params["f_min"], params["f_max"]
        )
        self.bands = MelBands(self.filters)
        n = np.arange(self.n_fft)
        self.hann = (0.5 - 0.5 * np.cos(2 * np.pi * n / self.n_fft)).astype(np.float32)
        self.power_floor = np.float32(10.0 ** (self.floor_db / 10.0))
        self.seconds = {"stft": 0.0, "mel": 0.0}  # the last call's (windowed FFT, mel and dB)

    def _pad(self, wave: np.ndarray) -> np.ndarray:
        half = self.n_fft // 2
        if len(wave) > half:
            return np.pad(wave, half, mode="reflect")
        return np.pad(wave, half)  # too short to reflect: silence around it

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """dB frames [T, n_mels]: a view of a mel-major [n_mels, T] array (see module doc)."""
        wave = np.asarray(wave, dtype=np.float32)
        total = 1 + len(wave) // self.hop
        padded = self._pad(wave)
        needed = (total - 1) * self.hop + self.n_fft
        if len(padded) < needed:
            padded = np.pad(padded, (0, needed - len(padded)))
        out = np.empty((self.filters.shape[1], total), dtype=np.float32)  # mel-major
        strided = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop]
        stft = mel = 0.0  # seconds of the last call's two halves (task=bench shows them)
        for first in range(0, total, FRAME_BLOCK):
            tic = time.perf_counter()
            block = strided[first : first + FRAME_BLOCK] * self.hann
            spectrum = _rfft(block)
            pairs = spectrum.view(spectrum.real.dtype)  # re, im interleaved: squared in place
            np.multiply(pairs, pairs, out=pairs)
            power = (pairs[:, 0::2] + pairs[:, 1::2]).astype(np.float32, copy=False)
            mid = time.perf_counter()
            mel_power = self.bands(power)
            np.maximum(mel_power, self.power_floor, out=mel_power)
            np.log10(mel_power, out=mel_power)
            np.multiply(mel_power.T, 10.0, out=out[:, first : first + len(block)])
            stft, mel = stft + mid - tic, mel + time.perf_counter() - mid
        self.seconds = {"stft": stft, "mel": mel}
        return out.T


def cut_windows(frames: np.ndarray, starts, n: int, pad_value: float) -> np.ndarray:
    """Windows [len(starts), features, n] cut from frames [T, features], padded past either end."""
    out = np.full((len(starts), frames.shape[1], n), pad_value, dtype=np.float32)
    for i, start in enumerate(starts):
        first, last = max(start, 0), min(start + n, len(frames))
        if last > first:
            out[i, :, first - start : last - start] = frames[first:last].T
    return out
