"""The VAE's LightningModule: ELBO training of `birdclef.models.vae.ConvVAE` on log-mel windows."""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError
from birdclef.modules.classifier import _plain
from birdclef.modules.schedules import build_optimizers


def elbo_terms(
    recon: torch.Tensor, target: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL), each summed over a window and averaged over the batch.

    The reconstruction term is the squared error (a unit-variance Gaussian likelihood up to
    a constant, times 2); KL is that of q(z | x) = N(mean, exp(log_var)) from N(0, I).
    """
    rec = (recon - target).pow(2).flatten(1).sum(dim=1).mean()
    kl = (-0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(dim=1)).mean()
    return rec, kl


class VAEModule(L.LightningModule):
    """ConvVAE + optimizer; loss = reconstruction + beta * KL (the beta-VAE ELBO).

    Metrics: `train/loss`, `train/recon` and `train/kl` (`_step` logs any stage's the same way).
    Batches are the DataModule's dicts; only `features` is read (labels are never seen).
    Checkpoints hold plain hyper-parameters, so `from_checkpoint` loads with `weights_only`.
    """

    def __init__(
        self, net: dict, optim: dict, beta: float = 1.0, frontend: dict | None = None
    ) -> None:
        super().__init__()
        if beta < 0:
            raise ConfigError(f"task.vae.beta={beta} must be >= 0 (1 = the plain VAE).")
        net, optim = _plain(net), _plain(optim)
        self.save_hyperparameters(
            {"net": net, "optim": optim, "beta": float(beta), "frontend": _plain(frontend)}
        )
        self.net = instantiate(net)
        self.beta = float(beta)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> VAEModule:
        """A trained VAE from `path`, in eval mode (loaded with `weights_only=True`)."""
        state = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(**state["hyper_parameters"])
        model.load_state_dict(state["state_dict"])
        return model.eval()

    @torch.no_grad()
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Windows -> latent means [B, latent_dim] (the representation task=embed scores)."""
        return self.net.encode(features)[0]

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        features = batch["features"]
        out = self.net(features)
        rec, kl = elbo_terms(out["recon"], self.net.target(features), out["mean"], out["log_var"])
        loss = rec + self.beta * kl
        for name, value in (("loss", loss), ("recon", rec), ("kl", kl)):
            self.log(
                f"{stage}/{name}", value, on_step=False, on_epoch=True,
                prog_bar=name == "loss", batch_size=len(features),
            )  # fmt: skip
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def configure_optimizers(self):
        return build_optimizers(
            self.parameters(), self.hparams.optim, self.trainer.estimated_stepping_batches
        )
