"""Training windows per second the DataModule's loader delivers from the frame cache, by workers.

    python benchmarks/loader_speed.py                                    # the synthetic set
    python benchmarks/loader_speed.py --root data/scale --cache data/scale_cache --batches 200

Composes the training DataModule as `python run.py data.root=ROOT` would (random crops:
`data.windows.crop=random`, so every read cuts a new window), opens its cache (built first when
missing: `task=cache` does it ahead), then reads `--batches` batches of `data.loader.batch_size`
from a fresh train loader for each `data.loader.num_workers` in `--workers`, interleaved,
`--repeats` times. Worker start-up is inside the timing (each epoch starts them again). No
model runs: this is the ceiling the loader puts on a GPU's steps.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import harness

from birdclef.runs.recipes import compose_run
from birdclef.tasks.train import build_datamodule


def reader(datamodule, workers: int, batches: int):
    def run() -> None:
        datamodule.loader_spec = replace(datamodule.loader_spec, num_workers=workers)
        for _ in itertools.islice(iter(datamodule.train_dataloader()), batches):
            pass

    return run


def main() -> None:
    p = harness.parser(__doc__, __file__, repeats=3, warmup=1)
    p.add_argument("--root", type=Path, default=None, help="data root (default: the synthetic set)")
    p.add_argument(
        "--cache", type=Path, default=None, help="data.cache.dir (default: the project's)"
    )
    p.add_argument("--batches", type=int, default=100, help="batches read per timed call")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    overrides = ["data.windows.crop=random", f"data.loader.batch_size={args.batch_size}",
                 "data.test=false"]  # fmt: skip
    overrides += [f"data.root={args.root}"] if args.root else []
    overrides += [f"data.cache.dir={args.cache}"] if args.cache else []
    datamodule = build_datamodule(compose_run(overrides))
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = min(args.batches, len(datamodule.train_dataloader()))  # a small set: one epoch
    variants = {f"{w} workers": reader(datamodule, w, batches) for w in args.workers}
    times = harness.interleave(variants, args.repeats, args.warmup)
    windows = min(batches * args.batch_size, len(datamodule.fit_set))
    stats = harness.compare(times, f"{args.workers[0]} workers", per=windows)
    rows = [[name, f"{1 / s['median']:,.0f}", f"{1 / s['q3']:,.0f}-{1 / s['q1']:,.0f}",
             f"{s['ratio'] ** -1:.2f}"] for name, s in stats.items()]  # fmt: skip
    table = harness.markdown_table(["loader", "windows/s (median)", "quartiles", "vs first"], rows)
    text = (
        f"Random-crop training windows from the cache of {args.root or 'the synthetic set'} "
        f"({len(datamodule.train_set):,} training windows), {batches} batches of "
        f"{args.batch_size} per call, {args.repeats} calls each after {args.warmup} warm-up, "
        f"interleaved; worker start-up included.\n\n{table}"
    )
    harness.report(args.out, text, {"stats": stats, "windows_per_call": windows})


if __name__ == "__main__":
    harness.run(main)
