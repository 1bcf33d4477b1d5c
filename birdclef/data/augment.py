"""Batch augmentation on log-mel windows: gain, soundscape background, mixup, SpecAugment.

Every net standardises each window, so a level shift of a whole window (`gain_db`)
changes nothing by itself: it matters only through mixup, where it jitters the two
recordings' relative level before they are mixed.

Applied by the LightningModule to training batches only (on the device the batch is
on). Mixing happens in the power domain, 10*log10(10^(a/10) + g*10^(b/10)), because
sounds add as power, not as dB images; the study's own soundscape interpolation
(linear in dB, label pulled towards `null`) is available as `background_label=study`.

Multilabel rule for mixup (`mixup_rule`):
    max     target = max(t_a, t_b): both species are audible, so both are present
            (the rule of most top solutions and of BirdSet's multilabel mixing);
    linear  target = lam * t_a + (1 - lam) * t_b: classic mixup.
With a softmax loss the mixed target is renormalised to sum to one. `labels`
(0/1 presence) always become the union.
"""

from __future__ import annotations

import torch
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.data.frontend import POWER_FLOOR

DB = 10.0  # dB per decade of power
TARGET_FLOOR = 1e-8  # a target summing to less is treated as empty when renormalising


def _to_power(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db / DB)


def _to_db(power: torch.Tensor) -> torch.Tensor:
    return DB * torch.log10(power.clamp_min(POWER_FLOOR))


def _per_sample(shape: tuple, batch: int) -> tuple:
    return (batch,) + (1,) * (len(shape) - 1)


class BatchAugment(nn.Module):
    """Training-time augmentation of dict batches (keys `mel`, `target`, `labels`, `background`).

    Every part is off at its default; `conf/augment/*.yaml` turns parts on.
    """

    def __init__(
        self,
        gain_db: float = 0.0,
        background_p: float = 0.0,
        background_snr_db: tuple[float, float] = (0.0, 20.0),
        background_label: str = "keep",
        mixup_p: float = 0.0,
        mixup_alpha: float = 0.4,
        mixup_rule: str = "max",
        time_masks: int = 0,
        time_mask_fraction: float = 0.1,
        freq_masks: int = 0,
        freq_mask_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        for name, p in (("background_p", background_p), ("mixup_p", mixup_p)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"augment.{name}={p} must be a probability in [0, 1].")
        if background_label not in ("keep", "study"):
            raise ConfigError(
                f"augment.background_label={background_label!r} must be 'keep' or 'study'."
            )
        if mixup_rule not in ("max", "linear"):
            raise ConfigError(f"augment.mixup_rule={mixup_rule!r} must be 'max' or 'linear'.")
        if mixup_alpha <= 0 or gain_db < 0 or time_masks < 0 or freq_masks < 0:
            raise ConfigError("augment: mixup_alpha must be > 0; gain_db and mask counts >= 0.")
        if not (0 <= time_mask_fraction < 1 and 0 <= freq_mask_fraction < 1):
            raise ConfigError("augment: mask fractions must be in [0, 1).")
        self.gain_db = gain_db
        self.background_p, self.background_snr_db = background_p, tuple(background_snr_db)
        self.background_label = background_label
        self.mixup_p, self.mixup_alpha, self.mixup_rule = mixup_p, mixup_alpha, mixup_rule
        self.time_masks, self.time_fraction = time_masks, time_mask_fraction
        self.freq_masks, self.freq_fraction = freq_masks, freq_mask_fraction

    @property
    def active(self) -> bool:
        return bool(
            self.gain_db or self.background_p or self.mixup_p or self.time_masks or self.freq_masks
        )

    @property
    def needs_background(self) -> bool:
        """Whether batches must carry `background` windows (cached train_soundscapes)."""
        return self.background_p > 0

    def forward(
        self, batch: dict[str, torch.Tensor], softmax: bool = False, null_index: int | None = None
    ) -> dict:
        batch = dict(batch)
        if self.gain_db > 0:
            shape = _per_sample(batch["features"].shape, len(batch["features"]))
            gain = (torch.rand(shape, device=batch["features"].device) * 2 - 1) * self.gain_db
            batch["features"] = batch["features"] + gain
        if self.background_p > 0:
            batch = self._background(batch, null_index)
        if self.mixup_p > 0 and len(batch["features"]) > 1:
            batch = self._mixup(batch)
        if softmax:
            total = batch["target"].sum(dim=-1, keepdim=True)
            batch["target"] = batch["target"] / total.clamp_min(TARGET_FLOOR)
        if self.time_masks or self.freq_masks:
            batch["features"] = self._mask(batch["features"])
        return batch

    def _background(self, batch: dict, null_index: int | None) -> dict:
        if "background" not in batch:
            raise ConfigError(
                "augment.background_p > 0 but the batch has no `background`: the data has no train_soundscapes."
            )
        mel, bg = batch["features"], batch["background"]
        n = len(mel)
        chosen = torch.rand(n, device=mel.device) < self.background_p
        shape = _per_sample(mel.shape, n)
        if self.background_label == "study":
            lam = (
                torch.rand(shape, device=mel.device) * 0.5 + 0.5
            )  # the labelled window stays dominant
            mixed = lam * mel + (1 - lam) * bg
            target = batch["target"].clone()
            lam_t = lam.view(n, 1)
            pulled = lam_t * target
            if null_index is not None:
                pulled[:, null_index] += (1 - lam_t[:, 0]).to(pulled.dtype)
            batch["target"] = torch.where(chosen.view(n, 1), pulled, target)
        else:
            low, high = self.background_snr_db
            snr = torch.rand(shape, device=mel.device) * (high - low) + low
            p_sig, p_bg = _to_power(mel), _to_power(bg)
            ratio = p_sig.mean(dim=(-2, -1), keepdim=True) / p_bg.mean(
                dim=(-2, -1), keepdim=True
            ).clamp_min(POWER_FLOOR)
            mixed = _to_db(p_sig + p_bg * ratio / torch.pow(10.0, snr / DB))
        batch["features"] = torch.where(chosen.view(shape), mixed, mel)
        return batch

    def _mixup(self, batch: dict) -> dict:
        mel, n = batch["features"], len(batch["features"])
        order = torch.randperm(n, device=mel.device)
        chosen = torch.rand(n, device=mel.device) < self.mixup_p
        beta = torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha)
        lam = beta.sample((n,)).to(mel.device)
        lam = torch.maximum(lam, 1 - lam)  # the first window stays dominant, so its ranking matters
        shape = _per_sample(mel.shape, n)
        mixed = _to_db(
            lam.view(shape) * _to_power(mel) + (1 - lam.view(shape)) * _to_power(mel[order])
        )
        batch["features"] = torch.where(chosen.view(shape), mixed, mel)
        t_a, t_b = batch["target"], batch["target"][order]
        if self.mixup_rule == "max":
            mixed_t = torch.maximum(t_a, t_b)
        else:
            mixed_t = lam.view(n, 1) * t_a + (1 - lam.view(n, 1)) * t_b
        batch["target"] = torch.where(chosen.view(n, 1), mixed_t, t_a)
        if (
            "weight" in batch
        ):  # loss weights (pseudo-label confidence): a mix is as sure as its less sure part
            w = batch["weight"]
            batch["weight"] = torch.where(chosen, torch.minimum(w, w[order]), w)
        if "truth" in batch:
            batch["truth"] = torch.where(
                chosen.view(n, 1),
                torch.maximum(batch["truth"], batch["truth"][order]),
                batch["truth"],
            )
        return batch

    def _mask(self, mel: torch.Tensor) -> torch.Tensor:
        """SpecAugment: zero-information stripes filled with each window's mean."""
        out = mel.clone()
        n, freqs, frames = mel.shape[0], mel.shape[-2], mel.shape[-1]
        fill = mel.mean(dim=(-2, -1), keepdim=True).expand_as(mel)
        for count, size, axis in ((self.time_masks, frames, -1), (self.freq_masks, freqs, -2)):
            width_max = int(size * (self.time_fraction if axis == -1 else self.freq_fraction))
            if width_max < 1:
                continue
            for _ in range(count):
                width = torch.randint(0, width_max + 1, (n,), device=mel.device)
                start = (torch.rand(n, device=mel.device) * (size - width + 1)).long()
                pos = torch.arange(size, device=mel.device)
                stripe = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # [n, size]
                view = (n, 1, 1, size) if axis == -1 else (n, 1, size, 1)
                out = torch.where(stripe.view(view), fill, out)
        return out
