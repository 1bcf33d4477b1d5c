"""Benchmark the frame cache: build speed (x real time) and training reads (windows/s).

Compares ways to feed 5-s training windows, in one process, side by side:
  random   the project's cache: a random crop cut from a recording's memory-mapped
           float16 frames, plus the per-window top-dB floor (birdclef.data.cache)
  fixed    the same at the study's fixed window starts
  pt       the study's layout: one `.pt` file per window, torch.load per read
  seek     no cache: seek into the file, decode only the 5-s window, compute the mel
  decode   no cache: decode the whole file, cut the window, compute the mel

    python benchmarks/cache_speed.py                     # real_xc if present, else synthetic
    python benchmarks/cache_speed.py --root /path/to/birdclef-2025 --reads 3000
Reads run warm (files in the page cache), in random order, repeated --repeats times;
the table gives medians and the ratio to decoding on the fly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from birdclef.data.audio import audio_seconds, load_audio
from birdclef.data.cache import FrameCache
from birdclef.data.frontend import MelFrontend
from birdclef.data.metadata import load_metadata
from birdclef.data.synthetic import SynthSpec, ensure_synthetic
from birdclef.data.windows import cut_window, recording_window_starts

HERE = Path(__file__).resolve().parent
REAL_XC = HERE.parent.parent / "shared" / "data" / "real_xc"


def build_speed(meta, frontend, workers: int, files: list[str]) -> tuple[float, float, Path]:
    out = Path(tempfile.mkdtemp(prefix="cachebench-"))
    cache = FrameCache(out, frontend, workers=workers)
    start = time.perf_counter()
    frames = cache.build(
        [meta.audio_path(f) for f in files], files, [f.split("/")[0] for f in files]
    )
    seconds = time.perf_counter() - start
    return seconds, frames, out


def read_rate(read_one, n: int, repeats: int, rng) -> float:
    rates = []
    for _ in range(repeats):
        order = rng.permutation(n)
        start = time.perf_counter()
        for i in order:
            read_one(int(i))
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=REAL_XC if (REAL_XC / "train.csv").is_file() else None
    )
    parser.add_argument("--reads", type=int, default=1500, help="windows read per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "cache_speed.json")
    args = parser.parse_args()
    root = args.root or ensure_synthetic(HERE.parent / "data", SynthSpec())
    meta = load_metadata(root)
    files = meta.train["filename"].drop_duplicates().tolist()
    audio_s = sum(audio_seconds(meta.audio_path(f)) for f in files)
    frontend = MelFrontend(32000)
    torch.set_num_threads(1)  # a DataLoader worker's view: one core per reader

    results = {
        "root": str(root),
        "files": len(files),
        "audio_hours": audio_s / 3600,
        "cores": os.cpu_count(),
    }
    for workers in sorted({1, os.cpu_count() or 1}):
        seconds, frames, out = build_speed(meta, frontend, workers, files)
        results[f"build_x_realtime_{workers}_workers"] = audio_s / seconds
        if workers != 1:
            shutil.rmtree(out)
        else:
            keep, keep_dir = frames, out
    frames = keep
    window = 5 * 32000
    n_frames = window // frontend.hop_length
    fixed = [  # (recording, start sample) of every window of the study's rule
        (i, s)
        for i in range(len(frames))
        for s in recording_window_starts(int(frames.index["n_samples"].iat[i]), window)
    ]
    results["windows"] = len(fixed)
    results["cache_mb"] = sum(p.stat().st_size for p in keep_dir.rglob("*.npy")) / 1e6

    def cut(i, start):
        return frontend.finish(frames.window(i, start, n_frames))

    paths = [meta.audio_path(frames.index["file"].iat[i]) for i, _ in fixed]
    starts = [s for _, s in fixed]
    rng_crop = np.random.default_rng(1)

    def from_random(k):
        i = fixed[k % len(fixed)][0]
        span = max(frames.n_frames(i) - n_frames, 0)
        return cut(i, int(rng_crop.integers(span + 1)))

    def from_fixed(k):
        i, s = fixed[k % len(fixed)]
        return cut(i, s // frontend.hop_length)

    pt_dir = keep_dir / "pt"

    def write_pt_files():
        pt_dir.mkdir()
        for k, (i, s) in enumerate(fixed):
            torch.save(cut(i, s // frontend.hop_length), pt_dir / f"{k}.pt")

    def from_pt(k):
        return torch.load(pt_dir / f"{k % len(fixed)}.pt", weights_only=True)

    def seek(k):
        k %= len(fixed)
        audio, _ = sf.read(
            paths[k], start=starts[k], frames=window, dtype="float32", always_2d=True
        )
        with torch.inference_mode():
            return frontend(torch.from_numpy(cut_window(audio.mean(axis=1), 0, window)))

    def decode(k):
        k %= len(fixed)
        with torch.inference_mode():
            return frontend(
                torch.from_numpy(cut_window(load_audio(paths[k], 32000), starts[k], window))
            )

    rng = np.random.default_rng(0)
    n = args.reads
    rates = {
        "random": read_rate(from_random, n, args.repeats, rng),
        "fixed": read_rate(from_fixed, n, args.repeats, rng),
    }
    write_pt_files()
    rates |= {
        "pt": read_rate(from_pt, n, args.repeats, rng),
        "seek": read_rate(seek, max(50, n // 10), args.repeats, rng),
        "decode": read_rate(decode, max(50, n // 10), args.repeats, rng),
    }
    results["reads_per_s"] = rates
    shutil.rmtree(keep_dir)

    print(
        f"\ndata: {root} ({len(files)} files, {audio_s / 3600:.2f} h, {len(fixed)} windows, {results['cache_mb']:.0f} MB cached)"
    )
    for key in sorted(k for k in results if k.startswith("build_")):
        print(f"cache build, {key.split('_')[3]} worker(s): {results[key]:.0f}x real time")
    print("| reader | windows/s (median) | vs decode |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['decode']:.0f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
