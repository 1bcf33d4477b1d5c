"""Segment scoring speed of the curation detectors, and the projected time for the competition's 280 h.

    BIRDCLEF_CPUS=1 python benchmarks/segment_speed.py ../shared/data/real_xc --yamnet data/models/yamnet_standin

Builds each detector's manifest of the folder's train_audio from scratch (a temporary
cache) with 1 worker and, where this job may use two CPUs, 2 workers; decoding and
resampling to 16 kHz are included, model loading is not (it happens before the clock starts
in one process, and in each worker's start-up with two).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from birdclef.core.cpus import available_cpus
from birdclef.data.curation.detectors import SileroVad, YamnetDetector
from birdclef.data.curation.manifest import SEGMENT_SECONDS, SegmentManifest
from birdclef.data.metadata import load_metadata

SAMPLE_RATE = 32000  # Hz
COMPETITION_HOURS = 280  # h of train_audio in BirdCLEF+ 2025
KEEP = ["Bird", "Bird vocalization, bird call, bird song", "Insect", "Frog", "Animal"]


def measure(detector, paths, keys, groups, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as cache:
        if workers <= 1:
            detector.load()
        began = time.perf_counter()
        manifest = SegmentManifest(cache, detector, SAMPLE_RATE, workers).build(paths, keys, groups)
        return len(manifest.segments), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--yamnet", help="a YAMNet SavedModel folder or TF-Hub handle")
    args = parser.parse_args()
    meta = load_metadata(args.root)
    paths, keys, groups = meta.train_files()
    detectors = [("Silero VAD (onnx)", SileroVad)]
    if args.yamnet:
        detectors.append((f"YAMNet ({args.yamnet})", lambda: YamnetDetector(args.yamnet, KEEP)))
    segments_280h = COMPETITION_HOURS * 3600 / SEGMENT_SECONDS  # about one segment per 5 s
    print(f"{len(keys)} files of {args.root}; projection: {segments_280h:,.0f} segments in 280 h")
    print("| detector | workers | segments | seconds | segments/s | 280 h projected |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in detectors:
        for workers in sorted({1, min(2, available_cpus())}):
            count, seconds = measure(make(), paths, keys, groups, workers)
            rate = count / seconds
            print(
                f"| {name} | {workers} | {count} | {seconds:.1f} | {rate:.1f} | "
                f"{segments_280h / rate / 3600:.1f} h |",
                flush=True,
            )


if __name__ == "__main__":
    main()
