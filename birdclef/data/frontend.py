"""Front ends turning 5-s waveforms into log-mel or MFCC images (the cached model input)."""

from __future__ import annotations

import torch
import torchaudio
import torchaudio.functional as AF
from torch import nn

from birdclef.errors import ConfigError

POWER_FLOOR = 1e-10  # power below this is silence (-100 dB)


class MelFrontend(nn.Module):
    """Waveform [..., samples] -> log-mel power [..., n_mels, frames] in dB.

    The front-end contract (any front end the cache can store): `sample_rate`, a
    `forward` from float waveforms [B, samples] at that rate to [B, *output_shape],
    `output_shape(samples)` and `params()` (a JSON-able dict naming everything the
    output depends on; the cache key hashes it).

    The top-dB floor is applied per window (torchaudio's AmplitudeToDB takes the
    maximum over the whole batch, which would make a window depend on its
    neighbours in the batch and break cache/on-the-fly equality).
    """

    log_mel_image = True  # a dB image: mel augmentations (mixing, masking) apply

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 128,
        n_fft: int = 2048,
        hop_length: int = 512,
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
            raise ConfigError(f"frontend n_mels={n_mels}, n_fft={n_fft}, hop_length={hop_length} must be positive.")
        self.sample_rate = sample_rate
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        self.f_min, self.f_max, self.top_db = f_min, f_max, top_db
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
            f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0,
        )  # fmt: skip

    @property
    def n_features(self) -> int:
        return self.n_mels

    def output_shape(self, n_samples: int) -> tuple[int, int]:
        """Shape of one window's output: (features, frames)."""
        return (self.n_features, 1 + n_samples // self.hop_length)

    def params(self) -> dict:
        """Everything the output depends on; the cache key is built from it."""
        return {
            "kind": type(self).__name__, "sample_rate": self.sample_rate, "n_mels": self.n_mels,
            "n_fft": self.n_fft, "hop_length": self.hop_length, "f_min": self.f_min,
            "f_max": self.f_max, "top_db": self.top_db,
        }  # fmt: skip

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        db = 10.0 * torch.log10(self.mel(wave).clamp_min(POWER_FLOOR))
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
        return db

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.log_mel(wave)


class MfccFrontend(MelFrontend):
    """Waveform -> MFCC [..., n_mfcc, frames]: a DCT of the log-mel, as the study compares."""

    log_mel_image = False  # cepstral coefficients: power-domain mixing would be meaningless

    def __init__(self, sample_rate: int, n_mfcc: int = 40, **mel_kwargs) -> None:
        super().__init__(sample_rate, **mel_kwargs)
        if not 1 <= n_mfcc <= self.n_mels:
            raise ConfigError(f"frontend n_mfcc={n_mfcc} must be between 1 and n_mels={self.n_mels}.")
        self.n_mfcc = n_mfcc
        self.register_buffer("dct", AF.create_dct(n_mfcc, self.n_mels, norm="ortho"), persistent=False)

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    def params(self) -> dict:
        return {**super().params(), "n_mfcc": self.n_mfcc}

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.log_mel(wave).transpose(-1, -2), self.dct).transpose(-1, -2)
