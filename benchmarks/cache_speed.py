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
Reads run warm (files in the page cache), each pass in a fresh random order; the readers
take turns (interleaved), --warmup untimed passes then --repeats timed ones each. The
table gives medians and the ratio to decoding on the fly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import harness
import numpy as np
import soundfile as sf
import torch

from birdclef.core.cpus import available_cpus
from birdclef.data.audio import audio_seconds, load_audio
from birdclef.data.cache import FrameCache
from birdclef.data.frontend import MelFrontend
from birdclef.data.metadata import load_metadata
from birdclef.data.synthetic import SynthSpec, ensure_synthetic
from birdclef.data.windows import cut_window, recording_window_starts

HERE = Path(__file__).resolve().parent
REAL_XC = HERE.parent.parent / "shared" / "data" / "real_xc"
SAMPLE_RATE = 32000  # Hz
WINDOW_SECONDS = 5  # s
SLOW_SHARE, SLOW_MIN = 10, 50  # seek and decode read a tenth of --reads (at least 50) per pass


def build_speed(meta, frontend, workers: int, files: list[str]) -> tuple[float, object, Path]:
    out = Path(tempfile.mkdtemp(prefix="cachebench-"))
    cache = FrameCache(out, frontend, workers=workers)
    paths, groups = [meta.audio_path(f) for f in files], [f.split("/")[0] for f in files]
    seconds, frames = harness.time_call(lambda: cache.build(paths, files, groups))
    return seconds, frames, out


def reading_pass(read_one, n: int, rng):
    """One timed call: read `n` windows in a fresh random order."""

    def run() -> None:
        for i in rng.permutation(n):
            read_one(int(i))

    return run


def main() -> None:
    parser = harness.parser(__doc__, __file__, repeats=5, warmup=1, threads=1,
                            out_flags=("--out", "--json"))  # fmt: skip
    parser.add_argument(
        "--root", type=Path, default=REAL_XC if (REAL_XC / "train.csv").is_file() else None
    )
    parser.add_argument("--reads", type=int, default=1500, help="windows read per repeat")
    args = parser.parse_args()
    root = args.root or ensure_synthetic(HERE.parent / "data", SynthSpec())
    meta = load_metadata(root)
    files = meta.train["filename"].drop_duplicates().tolist()
    audio_s = sum(audio_seconds(meta.audio_path(f)) for f in files)
    frontend = MelFrontend(SAMPLE_RATE)
    with harness.cpu_share(args.threads):  # a DataLoader worker's view: one core per reader
        results, table = measure(args, root, meta, files, audio_s, frontend)
        lines = [f"data: {root} ({len(files)} files, {audio_s / 3600:.2f} h, {results['windows']} "
                 f"windows, {results['cache_mb']:.0f} MB cached)"]  # fmt: skip
        for key in sorted(k for k in results if k.startswith("build_")):
            lines.append(
                f"cache build, {key.split('_')[3]} worker(s): {results[key]:.0f}x real time"
            )
        harness.report(args.out, "\n".join(lines) + "\n\n" + table, results)


def measure(args, root, meta, files, audio_s, frontend) -> tuple[dict, str]:
    """Build the cache with 1 worker and with this process's CPUs, then time the readers."""
    results = {"root": str(root), "files": len(files), "audio_hours": audio_s / 3600,
               "cores": os.cpu_count()}  # fmt: skip
    for workers in sorted({1, available_cpus()}):
        seconds, frames, out = build_speed(meta, frontend, workers, files)
        results[f"build_x_realtime_{workers}_workers"] = audio_s / seconds
        if workers != 1:
            shutil.rmtree(out)
        else:
            keep, keep_dir = frames, out
    frames = keep
    window = WINDOW_SECONDS * SAMPLE_RATE
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
                torch.from_numpy(cut_window(load_audio(paths[k], SAMPLE_RATE), starts[k], window))
            )

    rng = np.random.default_rng(0)
    reads = {"random": args.reads, "fixed": args.reads, "pt": args.reads}
    reads |= dict.fromkeys(("seek", "decode"), max(SLOW_MIN, args.reads // SLOW_SHARE))
    readers = {"random": from_random, "fixed": from_fixed, "pt": from_pt, "seek": seek,
               "decode": decode}  # fmt: skip
    passes = {name: reading_pass(fn, reads[name], rng) for name, fn in readers.items()}
    times = harness.interleave(passes, args.repeats, args.warmup)
    shutil.rmtree(keep_dir)
    stats = harness.compare(times, "decode", per=reads)
    rates = {name: 1 / s["median"] for name, s in stats.items()}
    results |= {"reads_per_s": rates, "seconds_per_read": stats}
    rows = [
        (name, f"{rate:,.0f}", f"{1 / stats[name]['ratio']:.0f}x") for name, rate in rates.items()
    ]
    return results, harness.markdown_table(["reader", "windows/s (median)", "vs decode"], rows)


if __name__ == "__main__":
    harness.run(main)
