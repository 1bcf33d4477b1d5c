"""Training speed on a GPU node: steps/s and windows/s of B0 and SED, bf16, the loader's share, DDP.

    python benchmarks/gpu_profile.py --root data/scale --cache data/scale_cache   # on a GPU node
    python benchmarks/gpu_profile.py --steps 5 --batch-size 8                    # here: CPU, synthetic

For each model (`--models`: `efficientnet` = timm B0, `sed`) and each setting the machine has
(`trainer=gpu`: one GPU, bf16-mixed; `trainer=ddp` on every GPU when there are two or more;
`trainer=cpu` without a GPU), one training run of `--steps` optimizer steps (`--repeats` runs,
interleaved) on `--root` (default: the built-in synthetic set) with `--workers` loader workers.
From each run's metrics: steps/s and windows/s over the epoch (`train/epoch_seconds`, the first
run's cuDNN autotuning included; use enough steps) and the loader's share
(`train/data_seconds` / `train/epoch_seconds`: time the steps waited for batches). Validation is
cut to 2 batches and the test soundscapes are not scored.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness
import pandas as pd

PROJECT = Path(__file__).resolve().parent.parent


def settings() -> list[tuple[str, list[str], int]]:
    """(name, trainer overrides, devices) of what this machine can run."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus == 0:
        return [("cpu", ["trainer=cpu"], 1)]
    found = [("1 GPU, bf16", ["trainer=gpu"], 1)]
    if gpus > 1:
        found.append(
            (
                f"DDP, {gpus} GPUs, bf16",
                ["trainer=ddp", f"trainer.devices={gpus}", "+trainer.precision=bf16-mixed"],
                gpus,
            )
        )
    return found


def one_run(model: str, trainer: list[str], args, folder: Path) -> dict:
    """`python run.py` for `args.steps` steps; its metrics."""
    command = [
        sys.executable, str(PROJECT / "run.py"), f"model={model}", *trainer,
        "trainer.max_epochs=1", "optim.min_steps=0", f"+trainer.limit_train_batches={args.steps}",
        "+trainer.limit_val_batches=2", "data.test=false", f"data.loader.batch_size={args.batch_size}",
        f"data.loader.num_workers={args.workers}", f"hydra.run.dir={folder}",
        *([f"data.root={args.root}"] if args.root else []),
        *([f"data.cache.dir={args.cache}"] if args.cache else []),
    ]  # fmt: skip
    with open(folder.with_suffix(".log"), "w") as log:
        done = subprocess.run(command, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; see {folder.with_suffix('.log')}")
    return pd.read_json(folder / "metrics.json", typ="series").to_dict()


def _rate(per_second: float) -> str:
    """Whole numbers where they are large (a GPU), three significant digits where they are small
    (a CPU), so a slow machine's rate never rounds to 0."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def main() -> None:
    p = harness.parser(__doc__, __file__, repeats=2)
    p.add_argument("--root", type=Path, default=None, help="data root (default: synthetic)")
    p.add_argument("--cache", type=Path, default=None, help="data.cache.dir")
    p.add_argument("--models", nargs="+", default=["efficientnet", "sed"])
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8, help="data.loader.num_workers")
    p.add_argument("--work", type=Path, default=PROJECT / "outputs" / "gpu_profile")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs: dict[tuple[str, str], list[dict]] = {}
    for i in range(args.repeats):  # interleaved: each model and setting once per pass
        for model in args.models:
            for name, trainer, devices in settings():
                folder = args.work / f"{model}_{trainer[0].split('=')[1]}_{i}"
                metrics = one_run(model, trainer, args, folder) | {"devices": devices}
                runs.setdefault((model, name), []).append(metrics)
    rows = []
    for (model, name), found in runs.items():
        epoch = harness.summary([m["train/epoch_seconds"] for m in found])["median"]
        waiting = harness.summary([m["train/data_seconds"] for m in found])["median"]
        windows = args.steps * args.batch_size * found[0]["devices"]
        rows.append([model, name, _rate(args.steps / epoch), _rate(windows / epoch),
                     f"{100 * waiting / epoch:.1f} %"])  # fmt: skip
    table = harness.markdown_table(
        ["model", "setting", "steps/s", "windows/s", "waiting for batches"], rows
    )
    text = (
        f"{args.steps} optimizer steps per run, batch {args.batch_size} per device, "
        f"{args.workers} loader workers, {args.repeats} runs each (medians), data "
        f"{args.root or 'synthetic'}; validation cut to 2 batches.\n\n{table}"
    )
    harness.report(args.out, text, {"runs": {f"{k[0]} / {k[1]}": v for k, v in runs.items()}})


if __name__ == "__main__":
    harness.run(main)
