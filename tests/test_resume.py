"""Resuming: the lr schedule goes on without a jump, and a stopped and resumed run trains
the same weights as an uninterrupted one."""

import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from birdclef.core.errors import ConfigError
from birdclef.modules.schedules import RESUME_MODES, WarmupCosine
from birdclef.tasks.train import run
from tests.conftest import compose_cfg

PEAK, FLOOR = 1e-3, 0.01  # lr, min_lr_ratio


def lr_trace(optimizer, scheduler, steps: int) -> list[float]:
    """The lr multiplier each of the next `steps` optimizer steps is taken with."""
    trace = []
    for _ in range(steps):
        trace.append(optimizer.param_groups[0]["lr"] / PEAK)
        optimizer.step()
        scheduler.step()
    return trace


def schedule(total: int, resume: str = "continue"):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    return optimizer, WarmupCosine(
        optimizer, total, warmup_fraction=0.1, min_lr_ratio=FLOOR, resume=resume
    )


def resumed_trace(
    planned: int, stop: int, resumed_total: int, resume: str, tmp_path
) -> list[float]:
    """Train `stop` steps of a `planned`-step schedule, checkpoint, resume to `resumed_total` steps
    the way Lightning does (schedule rebuilt for the new length, then states loaded)."""
    optimizer, scheduler = schedule(planned)
    trace = lr_trace(optimizer, scheduler, stop)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        tmp_path / "s.ckpt",
    )
    state = torch.load(tmp_path / "s.ckpt", weights_only=True)
    optimizer, scheduler = schedule(resumed_total, resume)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return trace + lr_trace(optimizer, scheduler, resumed_total - stop)


def cosine(progress: float) -> float:
    return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# resumed after the end (the README's resume), mid-cosine, during the warm-up
@pytest.mark.parametrize("stop", [100, 40, 5])
def test_resume_continue_keeps_the_schedule_it_was_on(stop, tmp_path):
    trace = resumed_trace(100, stop, 200, "continue", tmp_path)
    # the 100-step schedule, at its floor after step 100
    uninterrupted = lr_trace(*schedule(100), 200)
    np.testing.assert_allclose(trace, uninterrupted, rtol=0, atol=1e-12)
    assert uninterrupted[100:] == pytest.approx([FLOOR] * 100)
    assert max(np.diff(trace[10:])) <= 0  # no jump back up after the warm-up


def test_resume_stretch_spreads_the_rest_of_the_cosine_without_a_jump(tmp_path):
    trace = resumed_trace(100, 40, 200, "stretch", tmp_path)
    np.testing.assert_allclose(trace[:41], lr_trace(*schedule(100), 41), rtol=0, atol=1e-12)
    done = (40 - 10) / (100 - 10)  # cosine progress at the resumed step (10 warm-up steps)
    expected = [cosine(done + (1 - done) * k / (200 - 40)) for k in range(160)]
    np.testing.assert_allclose(trace[40:], expected, rtol=0, atol=1e-12)
    steps = np.abs(np.diff(trace[10:]))
    assert max(np.diff(trace[10:])) <= 0 and steps.max() <= np.pi / 2 * (1 - FLOOR) / 90 + 1e-12
    # resumed during the warm-up: it finishes, then one cosine over the new length
    trace = resumed_trace(100, 5, 200, "stretch", tmp_path)
    np.testing.assert_allclose(trace[:10], [(s + 1) / 11 for s in range(10)], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        trace[10:], [cosine((s - 10) / 190) for s in range(10, 200)], atol=1e-12
    )
    # a finished schedule has no cosine left to stretch: it stays at its floor
    assert resumed_trace(100, 100, 200, "stretch", tmp_path)[100:] == pytest.approx([FLOOR] * 100)


def test_scheduler_resume_option_comes_from_the_config(tmp_path):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    for value in RESUME_MODES:
        cfg = compose_cfg(f"optim.scheduler.resume={value}", tmp=tmp_path)
        assert instantiate(cfg.optim.scheduler)(optimizer=optimizer, total_steps=10).resume == value
    cfg = compose_cfg("optim.scheduler.resume=restart", tmp=tmp_path)
    with pytest.raises(ConfigError, match="optim.scheduler.resume='restart' must be one of"):
        instantiate(cfg.optim.scheduler)(optimizer=optimizer, total_steps=10)


def logged(out) -> pd.DataFrame:
    return pd.read_csv(next((out / "csv").rglob("metrics.csv")))


def fit_scores(out) -> pd.DataFrame:
    """Validation scores of the epochs a run trained (not those of its final `validate`)."""
    log = logged(out)
    trained = set(log.dropna(subset=["train/loss"])["epoch"])
    return log.dropna(subset=["val/auc"]).loc[lambda d: d["epoch"].isin(trained)]


# Lightning 2.6 rewrites last.ckpt only when it saves a top-k checkpoint, i.e. when `monitor`
# improves; monitoring the step makes every epoch's checkpoint the last one, as resuming needs.
EVERY_EPOCH = ("data.loader.batch_size=5",)
LR_STEPS = (*EVERY_EPOCH, "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
            "+callbacks.lr.logging_interval=step", "trainer.log_every_n_steps=1")  # fmt: skip


def test_resumed_run_with_more_epochs_keeps_the_lr_schedule(cfg_fast, tmp_path):
    # the README's resume: a finished 2-epoch run, resumed with trainer.max_epochs=4
    run(cfg_fast(*LR_STEPS, "trainer.max_epochs=2", tmp=tmp_path / "a"))
    last = tmp_path / "a/out/checkpoints/last.ckpt"
    run(cfg_fast(*LR_STEPS, "trainer.max_epochs=4", f"ckpt_path={last}", tmp=tmp_path / "b"))
    lrs = [logged(tmp_path / x / "out").dropna(subset=["lr-AdamW"]) for x in "ab"]
    steps = pd.concat(lrs)["step"].astype(int).tolist()
    trace = (pd.concat(lrs)["lr-AdamW"] / 2.0e-3).tolist()  # conf/optim/adamw.yaml's peak lr
    planned = len(lrs[0])  # optimizer steps of the first run, which sized its schedule
    assert steps == list(range(2 * planned)) and planned >= 3
    warmup = int(0.1 * planned)
    expected = [(s + 1) / (warmup + 1) if s < warmup else cosine((s - warmup) / (planned - warmup))
                for s in range(2 * planned)]  # fmt: skip
    np.testing.assert_allclose(trace, expected, rtol=1e-6)  # step by step: no restart at the resume


class StopAfter(L.Callback):
    """Stops a fit after `epochs` epochs, as if the job had been killed there."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(cfg_fast, tmp_path):
    recipe = (
        *EVERY_EPOCH,
        "augment=mixup",
        "callbacks=ema",
        "data.loader.sampler=balanced",
        "trainer.max_epochs=4",
    )
    whole = run(cfg_fast(*recipe, tmp=tmp_path / "whole"))
    stopper = (f"+callbacks.stop._target_={__name__}.StopAfter", "+callbacks.stop.epochs=2")
    first = run(cfg_fast(*recipe, *stopper, tmp=tmp_path / "a"))
    assert first["train/epochs"] == 2
    last = tmp_path / "a/out/checkpoints/last.ckpt"  # the resumed run writes beside it
    resumed = run(cfg_fast(*recipe, f"ckpt_path={last}", tmp=tmp_path / "b"))
    assert resumed["train/epochs"] == whole["train/epochs"] == 4
    trained = logged(tmp_path / "b/out").dropna(subset=["train/loss"])
    assert set(trained["epoch"].astype(int)) == {2, 3}  # only the epochs still to do were trained
    # the same weights (EMA and training copies), the same per-epoch scores, the same best checkpoint
    states = [torch.load(d / "checkpoints/last.ckpt", weights_only=True) for d in (last.parents[1], tmp_path / "whole/out")]  # fmt: skip
    for key, value in states[1]["state_dict"].items():
        torch.testing.assert_close(states[0]["state_dict"][key], value, rtol=0, atol=1e-6)
    ema = [next(v for k, v in s["callbacks"].items() if k.startswith("EMA")) for s in states]
    assert ema[0]["steps"] == ema[1]["steps"] == states[1]["global_step"]
    for key, value in ema[1]["backup"].items():
        torch.testing.assert_close(ema[0]["backup"][key], value, rtol=0, atol=1e-6)
    scores = [pd.concat([fit_scores(tmp_path / "a/out"), fit_scores(tmp_path / "b/out")]),
              fit_scores(tmp_path / "whole/out")]  # fmt: skip
    assert list(scores[0]["epoch"]) == list(scores[1]["epoch"]) == [0, 1, 2, 3]
    for key in ("val/auc", "val/loss", "val/balanced_acc"):
        np.testing.assert_allclose(scores[0][key], scores[1][key], rtol=0, atol=1e-6, err_msg=key)
    for key in ("val/auc", "val/loss", "val/balanced_acc", "test/soundscape_auc"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key
