"""EpochTimer: epoch wall time and the part of it spent waiting for batches (a fake clock)."""

from __future__ import annotations

import pytest

from birdclef.modules import callbacks


def test_the_wait_for_each_batch_is_counted_and_the_steps_are_not(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    timer = callbacks.EpochTimer()
    for epoch_wait in (0.5, 1.5):  # two epochs: batches wait 0.5 s then 1.5 s each, steps take 2 s
        timer.on_train_epoch_start(None, None)
        for i in range(3):
            now[0] += epoch_wait  # the loader
            timer.on_train_batch_start(None, None, None, i)
            now[0] += 2.0  # the step
            timer.on_train_batch_end(None, None, None, None, i)
        now[0] += 0.25  # the epoch's end (no batch)
        timer.on_train_epoch_end(None, None)
    assert timer.data_seconds == pytest.approx([1.5, 4.5])
    assert timer.seconds == pytest.approx([7.75, 10.75])
    assert timer.data_median == pytest.approx(3.0) and timer.median == pytest.approx(9.25)


def test_a_long_epoch_logs_a_progress_line_every_log_seconds(monkeypatch, caplog):
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    trainer = type("T", (), {"num_training_batches": 100, "current_epoch": 2})()
    timer = callbacks.EpochTimer(log_seconds=60)
    caplog.set_level("INFO", logger=callbacks.__name__)
    timer.on_train_epoch_start(trainer, None)
    for i in range(40):  # 40 batches of 0.5 s waiting + 2.5 s step: a line at 60 s and 120 s
        now[0] += 0.5
        timer.on_train_batch_start(trainer, None, None, i)
        now[0] += 2.5
        timer.on_train_batch_end(trainer, None, None, None, i)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "epoch 2: batch 20/100 (20 %), 0.33 batches/s, 16.7 % waiting for batches, "
        "about 4 min left in the epoch",
        "epoch 2: batch 40/100 (40 %), 0.33 batches/s, 16.7 % waiting for batches, "
        "about 3 min left in the epoch",
    ]
    assert "batch 7," in timer.progress(0, 7, float("inf"))  # no total known: no share, no ETA
    with pytest.raises(callbacks.ConfigError, match="log_seconds"):
        callbacks.EpochTimer(log_seconds=-1)
