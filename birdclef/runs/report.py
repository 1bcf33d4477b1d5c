"""Collect the `metrics.json` of runs (a sweep's folder, or several) into one markdown table.

    python -m birdclef.runs.report multirun/2026-11-27/10-00-00
    python -m birdclef.runs.report outputs/a outputs/b --out results.md --sort test/soundscape_auc
    python -m birdclef.runs.report multirun/voice_drop --mean-over seed --rare 2
Each run is named by the command-line overrides (Hydra's `.hydra/overrides.yaml`) in
which it differs from the other runs, leaving out paths and hydra settings; the
overrides all runs share are printed once above the table. Jobs that failed (a
`failed.txt` and no `metrics.json`, see birdclef.runs.jobs) are listed below it.

`--rare K` adds the mean per-class AUC of the classes with at most K recordings (from each
run's `per_class_auc.csv` and `split.csv`); `--mean-over seed` merges the runs that differ
only in their seed into one row of mean +- standard deviation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from birdclef.analysis.runlog import HIDDEN_PREFIXES
from birdclef.core.errors import DataError
from birdclef.core.io import write_text
from birdclef.runs.jobs import FAILED, METRICS

COLUMNS = {
    "test/soundscape_auc": ("soundscape AUC", "{:.3f}"),
    "val/auc": ("val AUC", "{:.3f}"),
    "val/balanced_acc": ("val bal. acc.", "{:.3f}"),
    "train/epoch_seconds": ("s / epoch", "{:.1f}"),
    "train/epochs": ("epochs", "{:.0f}"),
    "model/params": ("params (M)", "{:.2f}"),
    "infer/cpu_ms_per_window": ("CPU ms / 5-s window", "{:.1f}"),
}
# Shown only when some run has them (sweeps since birdclef.runs.jobs.job_info): what timings depend on.
JOB_COLUMNS = {
    "job/cpus": ("CPUs", "{:.0f}"),
    "job/concurrent_jobs": ("jobs at once", "{:.0f}"),
}
# Overrides that do not change results (after Hydra's +/++/~ prefix), left out of run names.
RARE = "test/rare_class_auc"  # --rare: added to each run's metrics
PER_CLASS, SPLIT = "per_class_auc.csv", "split.csv"  # written by every training run


def rare_class_auc(run_dir: Path, max_recordings: int) -> float:
    """Mean test AUC of the classes with at most `max_recordings` recordings in the run's split.

    The count includes the recordings a filter dropped (split "filtered"), so runs with
    different filters average over the same classes."""
    if not (run_dir / PER_CLASS).is_file() or not (run_dir / SPLIT).is_file():
        return math.nan
    counts = pd.read_csv(run_dir / SPLIT, dtype=str)["primary_label"].value_counts()
    per_class = pd.read_csv(run_dir / PER_CLASS, dtype={"class": str}).dropna(subset=["auc"])
    rare = per_class["class"].map(lambda c: counts.get(c, 0) <= max_recordings)
    return float(per_class.loc[rare, "auc"].mean()) if rare.any() else math.nan


def mean_over(runs: list[tuple[str, dict]], key: str) -> list[tuple[str, dict]]:
    """Runs whose names differ only in `key=...` merged: mean, standard deviation (`<metric>:sd`), count."""
    groups: dict[str, list[dict]] = {}
    for name, metrics in runs:
        rest = " ".join(t for t in name.split() if not t.startswith(f"{key}=")) or "(all)"
        groups.setdefault(rest, []).append(metrics)
    merged = []
    for name, members in groups.items():
        keys = {k for m in members for k, v in m.items() if isinstance(v, int | float)}
        out = {"runs": len(members)}
        for k in keys:
            values = np.array([m[k] for m in members if isinstance(m.get(k), int | float)], float)
            values = values[~np.isnan(values)]
            if len(values):
                out[k] = float(values.mean())
                out[f"{k}:sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        merged.append((name, out))
    return merged


def overrides_of(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) or [] if path.is_file() else []
    return [o for o in items if not o.lstrip("+~").startswith(HIDDEN_PREFIXES)]


def collect(folders: list[Path]) -> tuple[list[tuple[str, dict]], list[str]]:
    """(run name, metrics) of every run under `folders`, and the overrides they all share."""
    runs, _, common = collect_all(folders)
    return runs, common


def collect_all(
    folders: list[Path], rare: int | None = None
) -> tuple[list[tuple[str, dict]], list[tuple[str, str]], list[str]]:
    """(name, metrics) of finished runs, (name, reason) of failed ones, the shared overrides."""
    found = []
    for folder in folders:
        paths = list(folder.rglob(METRICS))
        paths += [p for p in folder.rglob(FAILED) if not (p.parent / METRICS).is_file()]
        if not paths:
            raise DataError(f"no {METRICS} under {folder}; point at a run or sweep folder.")
        for path in sorted(paths, key=lambda p: (len(p.parts), str(p))):
            text = path.read_text()
            result = json.loads(text) if path.name == METRICS else text.splitlines()[0]
            if rare is not None and isinstance(result, dict):
                result[RARE] = rare_class_auc(path.parent, rare)
            found.append((path.parent, overrides_of(path.parent), result))
    common = set.intersection(*(set(o) for _, o, _ in found)) if len(found) > 1 else set()
    named = [(" ".join(o for o in items if o not in common) or d.name, r) for d, items, r in found]
    runs = [(name, r) for name, r in named if isinstance(r, dict)]
    failed = [(name, r) for name, r in named if not isinstance(r, dict)]
    return runs, failed, [o for o in found[0][1] if o in common]


def table(runs: list[tuple[str, dict]], sort: str | None = None, rare: int | None = None) -> str:
    if sort:
        runs = sorted(runs, key=lambda r: -r[1].get(sort, -math.inf))
    columns = dict(COLUMNS)
    if rare is not None:
        columns = {
            **dict(list(COLUMNS.items())[:1]),
            RARE: (f"AUC, classes <= {rare} rec.", "{:.3f}"),
            **columns,
        }
    columns.update({k: v for k, v in JOB_COLUMNS.items() if any(k in m for _, m in runs)})
    if any("runs" in m for _, m in runs):
        columns["runs"] = ("runs", "{:.0f}")
    head = "| run | " + " | ".join(label for label, _ in columns.values()) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = []
    for name, metrics in runs:
        cells = []
        for key, (_, fmt) in columns.items():
            value = metrics.get(key)
            sd = metrics.get(f"{key}:sd")
            if value is not None and key == "model/params":
                value, sd = value / 1e6, None if sd is None else sd / 1e6
            cell = "" if value is None or math.isnan(value) else fmt.format(value)
            if cell and sd is not None and not math.isnan(sd) and sd > 0:
                cell += " ± " + fmt.format(sd)
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--sort", help="metric key to sort by, best first (e.g. test/soundscape_auc)"
    )
    parser.add_argument(
        "--rare", type=int, metavar="K", help="add the mean AUC of classes with <= K recordings"
    )
    parser.add_argument(
        "--mean-over", metavar="KEY", help="merge runs differing only in KEY (e.g. seed): mean ± sd"
    )
    args = parser.parse_args(argv)
    runs, failed, common = collect_all(args.folders, args.rare)
    if args.mean_over:
        runs = mean_over(runs, args.mean_over)
    text = table(runs, args.sort, args.rare) if runs else "No run finished."
    if common:
        text = f"All runs: `{' '.join(common)}`\n\n{text}"
    if failed:
        lines = [f"- {name}: {reason}" for name, reason in failed]
        text += f"\n\nFailed ({len(failed)}, see their {FAILED}):\n" + "\n".join(lines)
    if args.out:
        write_text(args.out, text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
