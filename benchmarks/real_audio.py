"""Models on real audio: train on real_xc, score its own test soundscapes and the multi-label mixtures.

Each named setting (Hydra overrides) trains once per seed on `--root`'s train_audio; its
best checkpoint then scores the labelled soundscapes of `--root` (single-species
recordings and annotated Screaming Piha windows) and of `--mix` (windows mixing two or
three of those recordings over real background, made by `python run.py task=mix`).

    python run.py task=mix task.source=../shared/data/real_xc task.output=data/real_xc_mix
    python benchmarks/real_audio.py --seeds 42 1 2 \\
        floor="model=linear model.n_features=128" old="label.m=1.0" default=""

A setting may be any task that trains a checkpoint (`task=distill ...` too); `{seed}` and
`{work}` in its overrides become the seed and the `--work` folder, so a setting can name
the checkpoints of settings before it, of the same seed (teachers):

    python benchmarks/real_audio.py head="model=birdnet" \
        kd="task=distill teacher.models=[{work}/head/{seed}/checkpoints/best.ckpt]"

Finished runs are kept under `--work` (one metrics file per setting and seed) and are
not trained again, so an interrupted benchmark resumes (a run that finished training but
stopped before it was scored is only scored). `--last` also scores each run's
`last.ckpt` on both tests (finished runs too, without training again): the last epoch, for
settings whose validation set cannot rank epochs (its AUC saturates near 1 when its
recordings also feed the training mixtures of `task=mix_train`). Prints a Markdown table of
means and standard deviations over the seeds and writes it to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_method

from birdclef.core.cpus import available_cpus
from birdclef.core.io import write_json, write_text
from birdclef.core.metric import macro_auc
from birdclef.modules.classifier import Classifier
from birdclef.runs.jobs import finished_metrics
from birdclef.tasks.train import build_datamodule

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REAL_XC = ROOT.parent / "shared" / "data" / "real_xc"
COLUMNS = ("test/soundscape_auc", "mix/soundscape_auc", "val/auc", "train/epoch_seconds")
LAST = ("last/test_soundscape_auc", "last/mix_soundscape_auc")


def config(overrides: list[str], out: Path, data_dir: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[f"paths.data_dir={data_dir}", f"paths.output_dir={out}", *overrides],
        )


@torch.inference_mode()
def score(checkpoint: Path, cfg) -> float:
    """The competition metric of `checkpoint` on the labelled soundscapes of `cfg.data.root`."""
    model = Classifier.from_checkpoint(checkpoint)
    dm = build_datamodule(cfg)
    dm.setup()
    if dm.classes != model.classes:
        raise SystemExit(f"{cfg.data.root} has other classes than the model was trained on")
    scores, truth = [], []
    for batch in dm.test_dataloader():
        scores.append(model.scores(model(batch["features"])))
        truth.append(batch["truth"])
    return macro_auc(torch.cat(truth).numpy(), torch.cat(scores).numpy())


def scoring_config(base: list[str], root: Path, out: Path, args):
    """Scored only: no training data (pseudo-labels of another root) goes with it."""
    return config(
        [*base, f"data.root={root}", "task=train", "data.pseudo.labels=null"], out, args.data_dir
    )


def one(name: str, overrides: list[str], seed: int, args) -> dict:
    out = args.work / name / str(seed)
    done = out / "benchmark.json"
    filled = [o.replace("{seed}", str(seed)).replace("{work}", str(args.work)) for o in overrides]
    base = [f"data.root={args.root}", f"seed={seed}", *filled]
    if done.is_file():
        result = json.loads(done.read_text())
    else:
        start = time.perf_counter()
        cfg = config(base, out, args.data_dir)
        # a run that trained but stopped before it was scored is scored, not trained again
        metrics = finished_metrics(cfg, out)
        if metrics is None:
            metrics = get_method(cfg.task.fn)(cfg)
            metrics["run/seconds"] = time.perf_counter() - start
        mix_cfg = scoring_config(base, args.mix, out / "mix", args)
        metrics["mix/soundscape_auc"] = score(out / "checkpoints" / "best.ckpt", mix_cfg)
        result = {"name": name, "seed": seed, "overrides": overrides, **metrics}
        write_json(done, result)
    if args.last and not all(k in result for k in LAST):
        last = out / "checkpoints" / "last.ckpt"
        for key, root in zip(LAST, (args.root, args.mix), strict=True):
            result[key] = score(last, scoring_config(base, root, out / "last", args))
        write_json(done, result)
    return result


def table(results: list[dict], names: list[str], columns=COLUMNS) -> str:
    lines = [
        "| setting | seeds | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for name in names:
        rows = [r for r in results if r["name"] == name]
        cells = []
        for key in columns:
            values = [r[key] for r in rows if key in r]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}" if values else "-")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("settings", nargs="+", help='name="override override ..."')
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--root", type=Path, default=REAL_XC)
    parser.add_argument("--mix", type=Path, default=ROOT / "data" / "real_xc_mix")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--work", type=Path, default=HERE / "results" / "real_audio")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "real_audio.md")
    parser.add_argument(
        "--last", action="store_true", help="also score each run's last.ckpt on both tests"
    )
    args = parser.parse_args()
    torch.set_num_threads(available_cpus())  # BIRDCLEF_CPUS=1 when sharing the machine
    for path, hint in ((args.root, "--root"), (args.mix / "soundscape_labels.csv", "task=mix")):
        if not path.exists():
            raise SystemExit(f"{path} does not exist; see {hint} in this script's help")
    settings = {}
    for item in args.settings:
        name, _, overrides = item.partition("=")
        settings[name] = overrides.split()
    results = [one(n, o, s, args) for n, o in settings.items() for s in args.seeds]
    text = table(results, list(settings), COLUMNS + LAST if args.last else COLUMNS)
    write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
