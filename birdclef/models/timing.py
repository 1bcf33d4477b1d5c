"""CPU timing of a trained model: what one 5-s window of a soundscape costs front end + net."""

from __future__ import annotations

import copy
import statistics
import time

import torch

SOUNDSCAPE_WINDOWS = 12  # 5-s windows in a 1-minute soundscape
WARMUP = 1


def cpu_ms_per_window(frontend, net, window_samples: int, repeats: int = 5) -> float:
    """Median milliseconds per window to turn a soundscape's 12 waveforms into scores.

    Front end and net, batched as one soundscape, on the CPU with the current torch
    thread setting; decoding is not included (about 0.5 ms per window with soundfile).
    """
    net = copy.deepcopy(net).cpu().eval()
    wave = (
        torch.randn(SOUNDSCAPE_WINDOWS, window_samples, generator=torch.Generator().manual_seed(0))
        * 0.1
    )
    times = []
    with torch.inference_mode():
        for i in range(WARMUP + repeats):
            start = time.perf_counter()
            net(frontend(wave).unsqueeze(1))
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / SOUNDSCAPE_WINDOWS
