"""Front ends turning waveforms into log-mel or MFCC features, frame by frame (the cached model input).

The front-end contract (what the frame cache and the nets rely on):
- `sample_rate`, `hop_length` (samples per frame) and `n_features`;
- `frames(wave)`: a whole recording [samples] -> float32 [frames, features] with
  `1 + samples // hop_length` frames, frame t centred on sample t * hop_length.
  This is what the cache stores; it must not depend on where windows will be cut;
- `finish(frames)`: [..., features, n] cut from those frames -> the model input of
  one window (per-window steps such as the top-dB floor, the MFCC's DCT);
- `pad_value`: the frame value past a recording's end (silence);
- `frame_params()`: a JSON-able dict of everything `frames` depends on (the cache key);
- `forward(wave [B, samples])`: `finish` of the window's own frames, for live audio.
A window of `n` samples covers `n // hop_length` frames, so windows tile without overlap.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
import torchaudio.functional as AF
from torch import nn

from birdclef.core.errors import ConfigError

POWER_FLOOR = 1e-10  # power below this is silence (-100 dB)
SILENCE_DB = 10.0 * math.log10(POWER_FLOOR)
FRAME_BLOCK = 4096  # frames per STFT call: bounds memory on 29-min recordings


class MelFrontend(nn.Module):
    """Waveform -> log-mel power in dB, [..., n_mels, frames].

    Frames are computed once per recording (`frames`, no per-window step) and cut
    into windows at read time; the top-dB floor is then applied per window
    (`finish`), so a window never depends on its neighbours or on where it was cut.
    """

    log_mel_image = True  # a dB image: mel augmentations (mixing, masking) apply
    pad_value = SILENCE_DB

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 500,
        f_min: float = 20.0,
        f_max: float = 16000.0,
        top_db: float | None = 80.0,
    ) -> None:
        super().__init__()
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ConfigError(
                f"frontend f_min={f_min} / f_max={f_max} must satisfy 0 <= f_min < f_max <= "
                f"sample_rate/2 = {sample_rate / 2}."
            )
        if n_mels < 1 or n_fft < 16 or hop_length < 1:
            raise ConfigError(
                f"frontend n_mels={n_mels}, n_fft={n_fft}, hop_length={hop_length} must be positive."
            )
        self.sample_rate = sample_rate
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        self.f_min, self.f_max, self.top_db = f_min, f_max, top_db
        # centre padding is done here (reflect at the recording's edges only), so a
        # recording can be transformed in blocks with the same result as in one piece
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
            f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0, center=False,
        )  # fmt: skip

    @property
    def n_features(self) -> int:
        return self.n_mels

    def frame_params(self) -> dict:
        """Everything `frames` depends on; the cache key is built from it (MFCCs share it)."""
        return {
            "kind": "log_mel_db", "sample_rate": self.sample_rate, "n_mels": self.n_mels,
            "n_fft": self.n_fft, "hop_length": self.hop_length, "f_min": float(self.f_min),
            "f_max": float(self.f_max), "floor_db": SILENCE_DB,
        }  # fmt: skip

    def params(self) -> dict:
        """Everything one window's features depend on."""
        return {**self.frame_params(), "kind": type(self).__name__, "top_db": self.top_db}

    def _log_mel(self, padded: torch.Tensor) -> torch.Tensor:
        """Already centre-padded waveform(s) [..., samples] -> dB [..., n_mels, frames]."""
        return 10.0 * torch.log10(self.mel(padded).clamp_min(POWER_FLOOR))

    def _pad(self, wave: torch.Tensor) -> torch.Tensor:
        half = self.n_fft // 2
        if wave.shape[-1] > half:
            return F.pad(wave.unsqueeze(-2), (half, half), mode="reflect").squeeze(-2)
        return F.pad(wave, (half, half))  # too short to reflect: silence around it

    @torch.inference_mode()
    def frames(self, wave) -> torch.Tensor:
        """A whole recording [samples] -> float32 dB frames [1 + samples // hop, n_mels]."""
        wave = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        padded = self._pad(wave)
        total = 1 + wave.shape[-1] // self.hop_length
        blocks = []
        for first in range(0, total, FRAME_BLOCK):
            count = min(FRAME_BLOCK, total - first)
            start = first * self.hop_length
            piece = padded[start : start + (count - 1) * self.hop_length + self.n_fft]
            if len(piece) < (count - 1) * self.hop_length + self.n_fft:
                piece = F.pad(piece, (0, (count - 1) * self.hop_length + self.n_fft - len(piece)))
            blocks.append(self._log_mel(piece)[:, :count].T)
        return torch.cat(blocks)

    def finish(self, frames: torch.Tensor) -> torch.Tensor:
        """Cut dB frames [..., n_mels, n] -> the window's features (the top-dB floor)."""
        if self.top_db is None:
            return frames
        if frames.dim() == 2:  # one window, as the dataset reads it: a scalar floor is faster
            return frames.clamp(min=float(frames.max()) - self.top_db)
        return torch.maximum(frames, frames.amax(dim=(-2, -1), keepdim=True) - self.top_db)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Windows [..., samples] -> features [..., features, samples // hop]."""
        n = wave.shape[-1] // self.hop_length
        return self.finish(self._log_mel(self._pad(wave))[..., :n])


class MfccFrontend(MelFrontend):
    """Waveform -> MFCC [..., n_mfcc, frames]: a DCT of each window's log-mel, as the study compares.

    It caches the same log-mel frames as `MelFrontend` (same cache key) and applies
    the top-dB floor and the DCT per window.
    """

    log_mel_image = False  # cepstral coefficients: power-domain mixing would be meaningless

    def __init__(self, sample_rate: int, n_mfcc: int = 40, **mel_kwargs) -> None:
        super().__init__(sample_rate, **mel_kwargs)
        if not 1 <= n_mfcc <= self.n_mels:
            raise ConfigError(
                f"frontend n_mfcc={n_mfcc} must be between 1 and n_mels={self.n_mels}."
            )
        self.n_mfcc = n_mfcc
        self.register_buffer(
            "dct", AF.create_dct(n_mfcc, self.n_mels, norm="ortho"), persistent=False
        )

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    def params(self) -> dict:
        return {**super().params(), "n_mfcc": self.n_mfcc}

    def finish(self, frames: torch.Tensor) -> torch.Tensor:
        db = super().finish(frames)
        return torch.matmul(db.transpose(-1, -2), self.dct).transpose(-1, -2)
