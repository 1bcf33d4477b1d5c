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
