"""A convolutional VAE on one log-mel window: encoder to a Gaussian latent, decoder back to the image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import Standardize

STRIDE = 2  # each encoder block halves both axes; each decoder block doubles them


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=STRIDE, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def _up(c_in: int, c_out: int, last: bool = False) -> nn.Module:
    conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=STRIDE, padding=1)
    return conv if last else nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())


class ConvVAE(nn.Module):
    """Window [B, 1, n_mels, frames] -> latent mean and log-variance [B, latent_dim] -> image.

    The window is standardised (zero mean, unit variance, as `input_norm: window` in the
    classifiers) and average-pooled by `pool` (mel bands, frames) first, so the VAE models
    the shape of the spectrogram on a coarser grid that one CPU trains in seconds;
    `target(features)` is that pooled, standardised image, the one `forward` reconstructs.
    Any window size works: the decoder's output is cropped to the pooled size.
    """

    def __init__(
        self,
        n_mels: int = 128,
        n_frames: int = 320,
        latent_dim: int = 16,
        channels: Sequence[int] = (16, 32, 64),
        pool: Sequence[int] = (2, 4),
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None:  # the classifier tasks pass it; a VAE has no classes
            raise ConfigError(
                "ConvVAE is a VAE, not a classifier: train and score it with task=embed "
                "(task.vae), or pick a classifier model for this task."
            )
        if latent_dim < 1 or not channels or min(channels) < 1 or min(pool) < 1:
            raise ConfigError(
                f"task.vae.latent_dim={latent_dim}, task.vae.channels={list(channels)} and "
                f"task.vae.pool={list(pool)} must be positive."
            )
        self.pool = tuple(int(p) for p in pool)
        self.size = (math.ceil(n_mels / self.pool[0]), math.ceil(n_frames / self.pool[1]))
        scale = STRIDE ** len(channels)
        if min(self.size) < scale:
            raise ConfigError(
                f"a {n_mels} x {n_frames} window pooled by {list(pool)} is {self.size}, too small "
                f"for {len(channels)} stride-{STRIDE} blocks; use fewer model.channels or a smaller model.pool."
            )
        widths = [1, *channels]
        self.norm = Standardize()
        self.encoder = nn.Sequential(
            *(_down(a, b) for a, b in zip(widths, widths[1:], strict=False))
        )
        self.grid = (math.ceil(self.size[0] / scale), math.ceil(self.size[1] / scale))
        flat = channels[-1] * self.grid[0] * self.grid[1]
        self.to_latent = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        back = widths[::-1]
        self.decoder = nn.Sequential(
            *(
                _up(a, b, last=i == len(back) - 2)
                for i, (a, b) in enumerate(zip(back, back[1:], strict=False))
            )
        )
        self.latent_dim, self.channels = latent_dim, list(channels)

    def target(self, features: torch.Tensor) -> torch.Tensor:
        """The standardised, pooled window [B, 1, *size] that the decoder reconstructs."""
        x = self.norm(features)
        return F.avg_pool2d(x, self.pool, ceil_mode=True) if self.pool != (1, 1) else x

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows -> (mean, log-variance) of q(z | window), each [B, latent_dim]."""
        stats = self.to_latent(self.encoder(self.target(features)).flatten(1))
        mean, log_var = stats.chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, latent_dim] -> reconstructed pooled windows [B, 1, *size]."""
        x = self.from_latent(z).view(len(z), self.channels[-1], *self.grid)
        return self.decoder(x)[..., : self.size[0], : self.size[1]]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """`recon` (the pooled image), `mean`, `log_var` and the sampled `z` (the mean in eval)."""
        mean, log_var = self.encode(features)
        z = mean
        if self.training:
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return {"recon": self.decode(z), "mean": mean, "log_var": log_var, "z": z}
