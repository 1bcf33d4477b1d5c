"""Benchmark task=eda at the full competition's size, from real_xc's files.

Builds a folder with the competition's counts (28,564 clips of 206 classes, 9,726
soundscapes): train.csv rows with a long-tailed class count, secondary labels, 500+ `type`
descriptors, collections and ratings, and audio files that are symbolic links to real_xc's
Ogg files (cycled). Then times task=eda on it and on real_xc itself.

    BIRDCLEF_CPUS=1 python benchmarks/eda_speed.py [--root ../shared/data/real_xc]
    python benchmarks/eda_speed.py --clips 200 --soundscapes 50   # a quick check

Prints a Markdown table (seconds per part of the report) and writes it with all numbers to
`--results` (.md and .json); `--out` keeps the two reports.

The links make every header read hit the page cache: the numbers are the CPU cost of the
report, not a cold disk's seek time (add that for a first run on a network disk).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import harness
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REAL_XC = HERE.parent.parent / "shared" / "data" / "real_xc"
CLIPS, SOUNDSCAPES, CLASSES, TYPES = 28_564, 9_726, 206, 587  # the competition's counts
KEYS = ("eda/files", "eda/header_seconds", "eda/section_seconds", "wall_seconds")


def full_size_folder(real: Path, dest: Path, clips: int, soundscapes: int, seed: int = 0) -> Path:
    """A competition-sized folder whose audio links to `real`'s files."""
    rng = np.random.default_rng(seed)
    labels = [f"cls{i:03d}" for i in range(CLASSES)]
    weights = 1.0 / np.arange(1, CLASSES + 1) ** 0.9  # long tail, as the competition's counts
    primary = rng.choice(labels, clips, p=weights / weights.sum())
    kinds = ["song", "call", "flight call", "alarm call"] + [
        f"descriptor {i}" for i in range(TYPES - 4)
    ]
    kind_weights = 1.0 / np.arange(1, TYPES + 1) ** 1.5
    sources = sorted((real / "train_audio").rglob("*.ogg"))
    scapes = sorted((real / "test_soundscapes").glob("*.ogg"))
    rows = []
    for i, label in enumerate(primary):
        second = rng.choice(labels, rng.integers(1, 3)).tolist() if rng.random() < 0.2 else []
        types = rng.choice(kinds, rng.integers(0, 3), p=kind_weights / kind_weights.sum()).tolist()
        name = f"{label}/XC{i:06d}.ogg"
        link = dest / "train_audio" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(sources[i % len(sources)].resolve())
        collection = rng.choice(["XC", "iNat", "CSA"], p=[0.7, 0.25, 0.05])
        rating = float(rng.choice(np.arange(0, 5.5, 0.5))) if collection == "XC" else 0.0
        rows.append({"primary_label": label, "secondary_labels": str(second), "type": str(types),
                     "filename": name, "collection": collection, "rating": rating})  # fmt: skip
    pd.DataFrame(rows).to_csv(dest / "train.csv", index=False)
    pd.DataFrame({"primary_label": labels, "class_name": "Aves"}).to_csv(
        dest / "taxonomy.csv", index=False
    )
    (dest / "train_soundscapes").mkdir()
    for i in range(soundscapes):
        (dest / "train_soundscapes" / f"S{i:05d}.ogg").symlink_to(scapes[i % len(scapes)].resolve())
    return dest


def time_eda(root: Path, tmp: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from birdclef.tasks.eda import run

    with initialize_config_dir(config_dir=str(HERE.parent / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"data.root={root}", f"paths.output_dir={tmp}",
                                           f"paths.data_dir={tmp / 'data'}", "task=eda"])  # fmt: skip
    seconds, metrics = harness.time_call(lambda: run(cfg))
    return {k: metrics[k] for k in KEYS[:-1]} | {"wall_seconds": seconds}


def main() -> None:
    parser = harness.parser(__doc__, __file__, out_flags=("--results",))
    parser.add_argument("--root", type=Path, default=REAL_XC)
    parser.add_argument("--clips", type=int, default=CLIPS)
    parser.add_argument("--soundscapes", type=int, default=SOUNDSCAPES)
    parser.add_argument("--out", type=Path, help="keep the two reports here (default: deleted)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, harness.cpu_share():
        tmp = args.out or Path(scratch)
        small = time_eda(args.root, tmp / "small")
        build, big_root = harness.time_call(
            lambda: full_size_folder(args.root, tmp / "full", args.clips, args.soundscapes)
        )
        big = time_eda(big_root, tmp / "big")
        per_file = small["eda/header_seconds"] / small["eda/files"]
        total = args.clips + args.soundscapes
        result = {
            "cpus": os.environ.get("BIRDCLEF_CPUS", "all"),
            "real_xc": small,
            "linear_projection_seconds": per_file * total + small["eda/section_seconds"],
            "full_size": big,
            "full_size_folder_build_seconds": build,
        }
        rows = [
            (name, f"{r['eda/files']:,}", f"{r['eda/header_seconds']:.2f} s",
             f"{r['eda/section_seconds']:.1f} s", f"{r['wall_seconds']:.1f} s")
            for name, r in (("real_xc", small), ("full competition size", big))
        ]  # fmt: skip
        text = harness.markdown_table(
            ["data", "files", "header reads", "other sections", "task total"], rows
        ) + (f"\n\nlinear projection from real_xc: {result['linear_projection_seconds']:.1f} s; "
             f"full-size folder built in {build:.2f} s")  # fmt: skip
        harness.report(args.results, text, result)


if __name__ == "__main__":
    harness.run(main)
