"""Post-processing and blends on labelled soundscapes: what each switch does to the soundscape AUC.

Each `--case NAME ROOT MODEL [MODEL ...]` scores ROOT's labelled test soundscapes with each
model once per window stride (and with SED frame scores where a model has them), then
assembles submissions under every setting below from those scores and scores them with the
competition metric; with two or more models it also scores the rank blend of every subset.

    python benchmarks/postprocess.py \\
        --case real_xc ../shared/data/real_xc data/models/xc_melcnn/checkpoints/best.ckpt \\
        --case synthetic data/synthetic/<name> data/models/syn_melcnn/checkpoints/best.ckpt

Prints a Markdown table (AUC per case and model, and the change against no post-processing)
and writes it to `--out` (.md, and every AUC in .json beside it). Models score files in one
worker process per CPU this job may use (`BIRDCLEF_CPUS`), one thread each.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import harness
import pandas as pd

from birdclef.core.metric import read_solution, score_tables
from birdclef.data.metadata import find_soundscape_labels
from birdclef.inference.loading import load_model
from birdclef.inference.predict import list_audio, predict_files
from birdclef.inference.submission import assemble

BLENDS = ("rank",)  # blends scored for every subset of two or more models

# name -> (stride s, SED frames, assemble keyword arguments)
SETTINGS = {
    "none": (5.0, False, {}),
    "top-1 scale": (5.0, False, {"topk": 1}),
    "top-2 scale": (5.0, False, {"topk": 2}),
    "top-3 scale": (5.0, False, {"topk": 3}),
    "top-2 scale, power 0.5": (5.0, False, {"topk": 2, "topk_power": 0.5}),
    "smooth [0.1, 0.8, 0.1]": (5.0, False, {"smooth_kernel": [0.1, 0.8, 0.1]}),
    "smooth [0.25, 0.5, 0.25]": (5.0, False, {"smooth_kernel": [0.25, 0.5, 0.25]}),
    "smooth [0.1, 0.8, 0.1] + top-2": (5.0, False, {"smooth_kernel": [0.1, 0.8, 0.1], "topk": 2}),
    "overlap: stride 2.5 s": (2.5, False, {}),
    "overlap: stride 2.5 s + top-2": (2.5, False, {"topk": 2}),
    "SED frames, stride 2.5 s": (2.5, True, {}),
}


def case_table(name: str, root: Path, models: list[str], workers: int) -> pd.DataFrame:
    solution = read_solution(find_soundscape_labels(root))
    columns = [c for c in solution.columns if c != "row_id"]
    files = list_audio(root / "test_soundscapes")
    loaded = [load_model(m) for m in models]
    labels = [_label(m) for m in models]
    has_frames = any(m.meta["outputs"][1:] for m in loaded)
    scored = {}
    for stride, sed in {(s, f) for s, f, _ in SETTINGS.values() if has_frames or not f}:
        scored[stride, sed] = predict_files(models, files, 1, workers, stride, sed, False)

    def auc(results, subset, how="rank", **kw) -> float:
        picked = [
            replace(r, scores={k: r.scores[i] for k, i in enumerate(subset)})
            if r.error is None
            else r
            for r in results
        ]
        frame, _ = assemble(picked, [loaded[i].classes for i in subset],
                            [models[i] for i in subset], columns, how, None, 2.0, **kw)  # fmt: skip
        return score_tables(solution, frame)[0]

    rows = []
    for setting, (stride, sed, kw) in SETTINGS.items():
        if (stride, sed) not in scored:
            continue
        results = scored[stride, sed]
        row = {"case": name, "setting": setting}
        for i, label in enumerate(labels):
            row[label] = auc(results, [i], **kw)
        for size in range(2, len(models) + 1):
            for subset in itertools.combinations(range(len(models)), size):
                for how in BLENDS:
                    row[f"{how} blend " + " + ".join(labels[i] for i in subset)] = auc(
                        results, list(subset), how, **kw
                    )
        rows.append(row)
    return pd.DataFrame(rows)


def _label(path: str) -> str:
    p = Path(path)
    if p.parent.name in ("checkpoints", "export"):
        return p.parent.parent.name if p.suffix == ".ckpt" else f"{p.parent.parent.name}/{p.name}"
    return f"{p.parent.name}/{p.name}"


def markdown(table: pd.DataFrame) -> str:
    out = []
    for case, part in table.groupby("case", sort=False):
        part = part.dropna(axis=1, how="all").drop(columns="case")
        cols = [c for c in part.columns if c != "setting"]
        base = part[part.setting == "none"].iloc[0]
        rows = [
            [r.setting] + [
                f"{r[c]:.3f}" if r.setting == "none" else f"{r[c]:.3f} ({r[c] - base[c]:+.3f})"
                for c in cols
            ]
            for _, r in part.iterrows()
        ]  # fmt: skip
        out += [f"**{case}** (soundscape AUC; change against `none` in brackets)", "",
                harness.markdown_table(["setting", *cols], rows), ""]  # fmt: skip
    return "\n".join(out)


def main() -> None:
    parser = harness.parser(__doc__, __file__)
    parser.add_argument(
        "--case", nargs="+", action="append", required=True, metavar="NAME ROOT MODEL"
    )
    args = parser.parse_args()
    for name, root, *models in args.case:
        if not models:
            parser.error(f"--case {name} {root} needs at least one model")
    with harness.cpu_share() as workers:  # one worker process per CPU of this job's share
        tables = [case_table(n, Path(r), models, workers) for n, r, *models in args.case]
        table = pd.concat(tables, ignore_index=True)
        cells = [{k: v for k, v in r.items() if pd.notna(v)} for r in table.to_dict("records")]
        harness.report(args.out, markdown(table), {"auc": cells})


if __name__ == "__main__":
    harness.run(main)
