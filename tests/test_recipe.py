"""Training recipe: balanced sampling, EMA, early stopping, determinism, DDP."""

import json
import shutil
import subprocess
import sys

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from birdclef.core.metric import competition_score
from birdclef.modules.callbacks import EMA
from birdclef.tasks.train import build_datamodule, run
from tests.conftest import FAST, ROOT, fast_cfg


def test_balanced_sampler_weights(cfg_fast):
    dm = build_datamodule(cfg_fast("data.loader.sampler=balanced", "data.loader.balance_power=1.0"))
    dm.setup()
    sampler = dm.balanced_sampler()
    primary = torch.as_tensor(dm.train_set.primary)
    counts = torch.bincount(primary)
    # power 1: every class has the same total weight
    totals = torch.zeros(len(counts), dtype=torch.double).index_add_(0, primary, sampler.weights)
    present = counts > 0
    assert torch.allclose(totals[present], torch.ones(int(present.sum()), dtype=torch.double))
    assert len(next(iter(dm.train_dataloader()))["features"]) == min(16, len(dm.train_set))


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.seen_in_val = []

    def training_step(self, batch, _):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, _):
        self.seen_in_val.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(L.Callback):
    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, module, *args):
        self.weights.append(module.layer.weight.detach().clone())


def test_ema_matches_the_formula_and_is_used_for_validation():
    data = DataLoader(TensorDataset(torch.randn(12, 3)), batch_size=4)
    module, ema, rec = Tiny(), EMA(decay=0.5), Recorder()
    start = module.layer.weight.detach().clone()
    trainer = L.Trainer(max_epochs=1, callbacks=[rec, ema], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, data, data)
    expected = start
    for step, w in enumerate(rec.weights, start=1):
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * w
    assert torch.allclose(ema.shadow["layer.weight"], expected, atol=1e-6)
    assert torch.allclose(module.seen_in_val[0], expected, atol=1e-6)  # validated with EMA weights
    assert not torch.allclose(rec.weights[-1], expected)


class StepRecorder(L.Callback):
    """The weights after each optimizer step (batches that only accumulate are skipped)."""

    def __init__(self):
        self.weights, self.seen = [], 0

    def on_train_batch_end(self, trainer, module, *args):
        if trainer.global_step > self.seen:
            self.seen = trainer.global_step
            self.weights.append(module.layer.weight.detach().clone())


def test_ema_updates_once_per_optimizer_step_with_accumulation():
    # 10 batches, accumulating 4: optimizer steps after batches 4, 8 and 10 (the epoch's end)
    data = DataLoader(TensorDataset(torch.randn(10, 3)), batch_size=1)
    module, ema, rec = Tiny(), EMA(decay=0.5), StepRecorder()
    start = module.layer.weight.detach().clone()
    trainer = L.Trainer(max_epochs=2, accumulate_grad_batches=4, callbacks=[rec, ema], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                        limit_val_batches=0)  # fmt: skip
    trainer.fit(module, data)
    assert trainer.global_step == 6 and ema.steps == 6 and len(rec.weights) == 6
    expected = start
    for step, w in enumerate(rec.weights, start=1):
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * w
    assert torch.allclose(ema.shadow["layer.weight"], expected, atol=1e-6)


def test_ema_run_saves_averaged_weights(cfg_fast, tmp_path):
    metrics = run(cfg_fast("callbacks=ema", "trainer.max_epochs=2"))
    state = torch.load(tmp_path / "out/checkpoints/best.ckpt", weights_only=True)
    shadow = next(v for k, v in state["callbacks"].items() if k.startswith("EMA"))["shadow"]
    key = next(iter(shadow))
    assert torch.equal(state["state_dict"][key], shadow[key])
    assert np.isfinite(metrics["test/soundscape_auc"])


def test_early_stopping_stops(cfg_fast):
    cfg = cfg_fast("callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                   "+callbacks.early_stopping.min_delta=1.0", "trainer.max_epochs=10")  # fmt: skip
    metrics = run(cfg)
    assert (
        metrics["train/epochs"] == 2
    )  # first epoch sets the best, the second cannot beat it by 1.0


def test_same_seed_same_model(cfg_fast, tmp_path):
    extra = (
        "trainer.max_epochs=1",
        "augment=recipe",
        "data.loader.sampler=balanced",
        "trainer.gradient_clip_val=1.0",
    )
    first = run(cfg_fast(*extra, tmp=tmp_path / "a"))
    second = run(cfg_fast(*extra, tmp=tmp_path / "b"))
    assert first["val/auc"] == second["val/auc"] and first["val/loss"] == second["val/loss"]
    a = torch.load(tmp_path / "a/out/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b/out/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # two processes that each start torch and Lightning
def test_ddp_evaluation_equals_a_single_process_one(tiny_root, tmp_path):
    # 11 soundscape rows and an odd number of validation windows: neither splits evenly over 2
    # processes, so the distributed sampler pads with repeats and the rows must be de-duplicated
    root = tmp_path / "root"
    shutil.copytree(tiny_root, root)
    labels = root / "test_soundscapes/soundscape_labels.csv"
    solution = pd.read_csv(labels, dtype={"row_id": str}).iloc[:-1]
    solution.to_csv(labels, index=False)
    dm = build_datamodule(fast_cfg(root, tmp=tmp_path))
    dm.setup()
    assert len(dm.test_set) == 11 and len(dm.val_set) % 2 == 1, len(dm.val_set)
    # train and evaluate with 2 CPU processes (gloo)
    args = [f"data.root={root}", *FAST, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
            "trainer.max_epochs=1", f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stdout + done.stderr
    assert (
        "All distributed processes registered. Starting with 2 processes"
        in done.stdout + done.stderr
    )
    ddp = json.loads((tmp_path / "run/metrics.json").read_text())
    # evaluate the same checkpoint in one process: resuming a finished run trains nothing and
    # scores its best checkpoint
    last = tmp_path / "run/checkpoints/last.ckpt"
    single = run(fast_cfg(root, "trainer.max_epochs=1", f"ckpt_path={last}", tmp=tmp_path))
    for key in ("val/auc", "val/balanced_acc", "test/soundscape_auc"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
    # every soundscape row scored once, in order, with the single process's scores
    written = [
        pd.read_csv(d / "soundscape_predictions.csv", dtype={"row_id": str})
        for d in (tmp_path / "run", tmp_path / "out")
    ]
    assert list(written[0]["row_id"]) == list(written[1]["row_id"]) == list(solution["row_id"])
    np.testing.assert_allclose(written[0][dm.classes], written[1][dm.classes], rtol=0, atol=1e-6)
    assert competition_score(solution, written[0]) == pytest.approx(
        ddp["test/soundscape_auc"], abs=1e-6
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_run(cfg_fast):
    metrics = run(cfg_fast("trainer=gpu", "trainer.max_epochs=2"))
    assert np.isfinite(metrics["val/auc"]) and np.isfinite(metrics["test/soundscape_auc"])


def test_filters_leave_the_validation_set_alone(cfg_fast):
    splits = {}
    for name in ("none", "rating"):
        dm = build_datamodule(
            cfg_fast(
                *(
                    ["filter.rating.enabled=true", "filter.rating.min_rating=5"]
                    * (name == "rating")
                ),
            )
        )
        dm.setup()
        splits[name] = dm.split
    val = {n: set(s.loc[s["split"] == "val", "filename"]) for n, s in splits.items()}
    train = {n: set(s.loc[s["split"] == "train", "filename"]) for n, s in splits.items()}
    assert val["none"] == val["rating"]
    assert train["rating"] < train["none"]  # the filter removed training rows only


def test_balanced_draws_are_seeded_per_epoch(cfg_train):
    """A resumed run (a fresh sampler set to its epoch) draws what the uninterrupted one drew."""
    dm = build_datamodule(cfg_train())
    dm.setup()
    running = dm.balanced_sampler()
    epochs = []
    for epoch in range(3):
        running.set_epoch(epoch)
        epochs.append(list(running))
    fresh = dm.balanced_sampler()
    fresh.set_epoch(2)
    assert list(fresh) == epochs[2] and epochs[1] != epochs[2]
