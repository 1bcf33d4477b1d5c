"""The VAE: shapes for any window size, the ELBO's terms, a falling loss, checkpoints, refusals."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from birdclef.core.errors import ConfigError, user_error
from birdclef.models.vae import ConvVAE
from birdclef.modules.classifier import Classifier
from birdclef.modules.vae import VAEModule, elbo_terms
from birdclef.runs.renamed import new_name
from tests.conftest import compose_cfg

NET = {"_target_": "birdclef.models.vae.ConvVAE", "n_mels": 32, "n_frames": 40, "latent_dim": 4,
       "channels": [8, 16], "pool": [1, 1]}  # fmt: skip
OPTIM = {"optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3}}


@pytest.mark.parametrize(("mels", "frames", "pool", "size"), [
    (128, 320, (2, 4), (64, 80)), (128, 313, (2, 4), (64, 79)), (40, 37, (1, 1), (40, 37)),
])  # fmt: skip
def test_reconstruction_has_the_pooled_window_shape(mels, frames, pool, size):
    net = ConvVAE(n_mels=mels, n_frames=frames, latent_dim=6, channels=[4, 8, 8], pool=pool)
    x = torch.randn(3, 1, mels, frames)
    out = net(x)
    assert out["recon"].shape == net.target(x).shape == (3, 1, *size)
    assert out["mean"].shape == out["log_var"].shape == out["z"].shape == (3, 6)
    net.eval()
    torch.testing.assert_close(net(x)["z"], net(x)["mean"])  # no sampling in eval


def test_elbo_terms_are_summed_squared_error_and_gaussian_kl():
    target = torch.zeros(2, 1, 2, 3)
    recon = torch.ones(2, 1, 2, 3)
    zero = torch.zeros(2, 5)
    rec, kl = elbo_terms(recon, target, zero, zero)
    assert rec.item() == pytest.approx(6.0) and kl.item() == pytest.approx(0.0)
    # KL(N(1, e^0) || N(0, 1)) = 1/2 per dimension
    assert elbo_terms(recon, target, torch.ones(2, 5), zero)[1].item() == pytest.approx(2.5)


def test_vae_loss_falls_on_a_tiny_set_and_reloads(tmp_path):
    torch.manual_seed(0)
    ramp = torch.linspace(-1, 1, 40)
    images = [torch.outer(torch.linspace(-1, 1, 32) * s, ramp) for s in (1.0, -1.0, 0.5, -0.5)]
    items = [{"features": (im + 0.05 * torch.randn_like(im)).unsqueeze(0)} for im in images * 4]
    module = VAEModule(NET, OPTIM, beta=0.1)
    losses: list[float] = []
    record = L.pytorch.callbacks.LambdaCallback(
        on_train_epoch_end=lambda t, m: losses.append(float(t.callback_metrics["train/loss"]))
    )
    trainer = L.Trainer(
        max_epochs=40, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[record], enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, DataLoader(items, batch_size=16))
    assert losses[-1] < 0.5 * losses[0]
    trainer.save_checkpoint(tmp_path / "vae.ckpt")
    loaded = VAEModule.from_checkpoint(tmp_path / "vae.ckpt")
    batch = torch.stack([i["features"] for i in items[:4]])
    torch.testing.assert_close(loaded.embed(batch), module.eval().embed(batch))
    assert loaded.hparams.beta == 0.1 and loaded.embed(batch).shape == (4, 4)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="latent_dim"):
        ConvVAE(latent_dim=0)
    with pytest.raises(ConfigError, match="too small"):
        ConvVAE(n_mels=8, n_frames=8, channels=[4, 4, 4, 4], pool=[2, 2])
    with pytest.raises(ConfigError, match="beta"):
        VAEModule(NET, OPTIM, beta=-1.0)


def test_model_vae_in_the_train_task_points_to_task_embed(tmp_path):
    assert "task=embed" in new_name("model=vae")  # the old option, on the command line
    net = {"_target_": "birdclef.models.vae.ConvVAE"}
    with pytest.raises(Exception) as caught:
        Classifier(
            net,
            compose_cfg(tmp=tmp_path).loss,
            compose_cfg(tmp=tmp_path).optim,
            ["a", "b"],
            ["a", "b"],
        )
    assert "task=embed" in str(user_error(caught.value))
    assert compose_cfg("task=embed", tmp=tmp_path).task.vae.latent_dim == 16
