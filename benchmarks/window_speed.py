"""Window scoring speed of the curation detectors, and the projected time for the competition's 280 h.

    BIRDCLEF_CPUS=1 python benchmarks/window_speed.py ../shared/data/real_xc --yamnet data/models/yamnet_standin
    python benchmarks/window_speed.py ../shared/data/real_xc --files 4   # a quick check

Builds each detector's manifest of the folder's train_audio from scratch (a new temporary
cache per timed build) with 1 worker and, where this job may use two CPUs, 2 workers;
decoding and resampling to 16 kHz are included, model loading is not (it happens before the
clock starts in one process, and in each worker's start-up with two). The settings take
turns (interleaved), --repeats timed builds each; the table gives medians.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import harness

from birdclef.core.cpus import available_cpus
from birdclef.data.curation.detectors import SileroVad, YamnetDetector
from birdclef.data.curation.manifest import WINDOW_SECONDS, WindowManifest
from birdclef.data.metadata import load_metadata

SAMPLE_RATE = 32000  # Hz
COMPETITION_HOURS = 280  # h of train_audio in BirdCLEF+ 2025
MAX_WORKERS = 2  # worker counts timed: 1 and, where the share allows, this
KEEP = ["Bird", "Bird vocalization, bird call, bird song", "Insect", "Frog", "Animal"]


def manifest_build(detector, workers: int, files: tuple, scratch: str, counts: dict, key):
    """One timed call: score `files` into a new cache folder; `counts[key]` gets the windows."""
    if workers <= 1:
        detector.load()  # in this process, before any clock starts

    def run() -> None:
        cache = tempfile.mkdtemp(dir=scratch)
        manifest = WindowManifest(cache, detector, SAMPLE_RATE, workers).build(*files)
        counts[key] = len(manifest.windows)

    return run


def main() -> None:
    parser = harness.parser(__doc__, __file__, repeats=1, warmup=0)
    parser.add_argument("root", type=Path)
    parser.add_argument("--yamnet", help="a YAMNet SavedModel folder or TF-Hub handle")
    parser.add_argument("--files", type=int, help="score only the first N files (default: all)")
    args = parser.parse_args()
    paths, keys, groups = (part[: args.files] for part in load_metadata(args.root).train_files())
    makers = {"Silero VAD (onnx)": SileroVad}
    if args.yamnet:
        makers[f"YAMNet ({args.yamnet})"] = lambda: YamnetDetector(args.yamnet, KEEP)
    windows_280h = COMPETITION_HOURS * 3600 / WINDOW_SECONDS  # about one window per 5 s
    counts: dict = {}
    # each detector runs on one thread; with two workers, two run at once
    with tempfile.TemporaryDirectory() as scratch, harness.cpu_share(1):
        variants = {
            (name, workers): manifest_build(
                make(), workers, (paths, keys, groups), scratch, counts, (name, workers)
            )
            for name, make in makers.items()
            for workers in sorted({1, min(MAX_WORKERS, available_cpus())})
        }
        times = harness.interleave(variants, args.repeats, args.warmup)
        rows, data = [], []
        for (name, workers), seconds in times.items():
            stats = harness.summary(seconds)
            count = counts[name, workers]
            rate = count / stats["median"]
            rows.append((name, workers, count, f"{stats['median']:.1f}", f"{rate:.1f}",
                         f"{windows_280h / rate / 3600:.1f} h"))  # fmt: skip
            data.append({"detector": name, "workers": workers, "windows": count,
                         "windows_per_s": rate, "seconds": stats})  # fmt: skip
        columns = ["detector", "workers", "windows", "seconds", "windows/s", "280 h projected"]
        text = (f"{len(keys)} files of {args.root}; projection: {windows_280h:,.0f} windows "
                f"in 280 h; median of {args.repeats} build(s)\n\n")  # fmt: skip
        harness.report(args.out, text + harness.markdown_table(columns, rows), {"rows": data})


if __name__ == "__main__":
    harness.run(main)
