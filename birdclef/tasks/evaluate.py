"""Task `evaluate`: which recipe is better, and by how much, on data it was not tuned on.

    python run.py task=evaluate                          # the default against the floor, synthetic set
    python run.py task=evaluate "task.roots=[../shared/data/real_xc]" "task.seeds=[42,1,2]"

For every data root, recipe and seed, the training recordings are split into K folds grouped
by recording (`data.split.folds`). A fold job trains on K-1 folds and scores the held-out
recordings cut into 5-s rows like a soundscape, so every recording gets out-of-fold (OOF) rows.
A job uses its last epoch (`monitor=null`): nothing is selected on the fold it scores. It never
reads the test soundscapes (`data.test=false`). Once a recipe's K jobs of a seed are done, their
K models, averaged, score the labelled test soundscapes: once, after everything is fixed.
Then the metric on the OOF rows and on the test rows, 95% intervals by bootstrap over files and
seeds, and each recipe's paired difference from the baseline (`birdclef.analysis.intervals`).
On OOF rows a positive is ranked only against negatives of its own fold
(`stratified_macro_auc`): K models score them, each calibrated its own way, and a pooled AUC
ranked one model against another (below chance on a small multi-label set).

Writes `results.csv` and `results.md` (headed by the command that made them) into the run
folder, and every job into `task.work`: a finished job (same config) is skipped, a killed one
runs again. With `task.shards=N` a process runs only shard `task.shard` of the jobs (`python
run.py -m task=evaluate task.shard=0,1 task.shards=2 launcher=local` splits the cores); the
same command without shards then runs what is missing and writes the tables.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import DictConfig

from birdclef.analysis.intervals import bootstrap, interval, jackknife, paired, point_estimate
from birdclef.core.errors import ConfigError, DataError
from birdclef.core.io import write_csv, write_text
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.labels import presence
from birdclef.data.metadata import Metadata, load_metadata, load_soundscape_labels
from birdclef.data.mixtures import MIN_OVERLAP_SECONDS, mixed_spans, row_presence
from birdclef.data.root import data_root
from birdclef.inference.predict import FilePredictor
from birdclef.inference.runtime import predict_folder
from birdclef.runs.envelope import run_dir, task
from birdclef.runs.jobs import finished_metrics
from birdclef.runs.recipes import as_list, command_line_overrides, compose_run, recipe_overrides

log = logging.getLogger(__name__)

OOF, TEST, CHECKPOINT = "oof_rows.csv", "test_rows.csv", "checkpoints/best.ckpt"
SYNTHETIC = "synthetic"  # a root of null: the built-in synthetic set


@dataclass(frozen=True)
class Job:
    root: str | None
    recipe: str
    seed: int
    fold: int
    folder: Path
    overrides: tuple[str, ...]


def root_name(root: str | None) -> str:
    return SYNTHETIC if root is None else Path(root).resolve().name


def plan(cfg: DictConfig) -> list[Job]:
    """Every fold job of every root, recipe and seed, in a fixed order."""
    t = cfg.task
    unknown = [name for name in t.compare if name not in t.recipes]
    if not t.compare or unknown:
        raise ConfigError(
            f"task.compare={list(t.compare)} must name recipes of task.recipes {list(t.recipes)}; "
            'add one with +task.recipes.<name>="<overrides>".'
        )
    if t.baseline is not None and t.baseline not in t.compare:
        raise ConfigError(
            f"task.baseline={t.baseline} is not one of task.compare {list(t.compare)}."
        )
    if int(t.folds) < 2:
        raise ConfigError(f"task.folds={t.folds} must be >= 2 (grouped K-fold of the recordings).")
    base = [*command_line_overrides(), *as_list(t.base or [])]
    jobs = []
    for root in as_list(t.roots):
        root_part = [] if root is None else [f"data.root={root}"]
        for name in t.compare:
            recipe = recipe_overrides(name, t.recipes[name])
            for seed in as_list(t.seeds):
                for fold in range(int(t.folds)):
                    folder = Path(t.work) / root_name(root) / name / f"s{seed}" / f"f{fold}"
                    overrides = (
                        *base, *recipe, *root_part, f"seed={seed}", f"data.split.folds={t.folds}",
                        f"data.split.fold={fold}", "monitor=null", "data.test=false",
                        f"paths.data_dir={cfg.paths.data_dir}", f"paths.output_dir={folder}",
                    )  # fmt: skip
                    jobs.append(Job(root, name, int(seed), fold, folder, overrides))
    return jobs


def run_job(job: Job) -> None:
    """Train one fold (unless finished with this config) and score its held-out recordings."""
    cfg = compose_run(list(job.overrides))
    if finished_metrics(cfg, job.folder) is not None and (job.folder / OOF).is_file():
        return
    if job.folder.exists():  # a killed run's checkpoints must not be taken as its own
        shutil.rmtree(job.folder)
    log.info("evaluate: %s, seed %d, fold %d", job.recipe, job.seed, job.fold)
    get_method(cfg.task.fn)(cfg)
    score_held_out(cfg, job.folder)


def score_held_out(cfg: DictConfig, folder: Path) -> None:
    """The held-out recordings of a fold job, cut into 5-s rows and scored by its checkpoint."""
    split = pd.read_csv(folder / "split.csv", dtype=str)
    held = split.loc[split["split"] == "val", "filename"].tolist()
    meta = load_metadata(data_root(cfg))
    predictor = FilePredictor([folder / CHECKPOINT], threads=torch.get_num_threads())
    classes = predictor.models[0].classes
    tables = []
    for filename in held:
        result = predictor(meta.audio_path(filename))
        if result.error:
            log.warning("not scored: %s (%s)", filename, result.error)
            continue
        ends = ROW_SECONDS * (np.arange(result.rows) + 1)
        table = pd.DataFrame(result.scores[0], columns=classes)
        table.insert(0, "file", filename)
        table.insert(0, "row_id", [f"{filename}_{e}" for e in ends])
        tables.append(table)
    write_csv(folder / OOF, pd.concat(tables, ignore_index=True))


def score_test(jobs: list[Job], root: Path, out: Path, threads: int) -> pd.DataFrame | None:
    """The K fold models of one recipe and seed, averaged, on the labelled test soundscapes."""
    path = out / TEST
    checkpoints = [j.folder / CHECKPOINT for j in jobs]
    newest = max(c.stat().st_mtime for c in checkpoints)
    if path.is_file() and path.stat().st_mtime >= newest:
        return pd.read_csv(path, dtype={"row_id": str})
    folder = root / "test_soundscapes"
    settings = {"models": [str(c) for c in checkpoints], "blend": "mean", "threads": threads,
                "workers": 1, "taxonomy": str(root)}  # fmt: skip
    table, _ = predict_folder(folder, settings, progress=False)
    write_csv(path, table)
    return table


def scorable(root: Path, group_by: str) -> list[str]:
    """Classes whose recordings span two or more split groups: only those can be scored out of
    fold (a class with one recording is never in the training folds when it is held out)."""
    meta = load_metadata(root)
    spread = meta.train.groupby("primary_label")[group_by].nunique()
    return [c for c in meta.classes if spread.get(c, 0) >= 2]


def oof_truth(meta: Metadata, rows: pd.DataFrame, spans: pd.DataFrame | None) -> np.ndarray:
    """0/1 presence of each OOF row (`file`, `row_id`): its recording's primary species, and its
    secondary species on every row, or, given where each was mixed in (`mixed_spans` of a
    `task=mix_recordings` folder), on the rows that hold at least `MIN_OVERLAP_SECONDS` of it."""
    recordings = meta.train.set_index("filename").loc[rows["file"].to_numpy()]
    if spans is None:
        return presence(recordings["primary_label"], recordings["secondary_labels"], meta.classes)
    truth = presence(recordings["primary_label"], [[]] * len(rows), meta.classes)
    ends = rows["row_id"].str.rsplit("_", n=1).str[1].astype(float).to_numpy()
    return np.maximum(truth, row_presence(spans, rows["file"].to_numpy(), ends, meta.classes))


def aggregate(cfg: DictConfig, jobs: list[Job]) -> pd.DataFrame:
    """results.csv's rows: every root and recipe, OOF and test, intervals and paired differences."""
    t, records = cfg.task, []
    threads = max(1, int(t.threads or 1))
    for root in as_list(t.roots):
        name = root_name(root)
        mine = [j for j in jobs if j.root == root]
        root_path = root_of(mine[0])
        meta = load_metadata(root_path)
        oof, test = {}, {}
        for recipe in t.compare:
            oof[recipe], test[recipe] = [], []
            for seed in as_list(t.seeds):
                fold_jobs = [j for j in mine if j.recipe == recipe and j.seed == int(seed)]
                rows = pd.concat(
                    [pd.read_csv(j.folder / OOF, dtype=str).assign(fold=j.fold) for j in fold_jobs]
                )
                oof[recipe].append(rows.sort_values("row_id").reset_index(drop=True))
                if t.test and load_soundscape_labels(root_path, meta.classes) is not None:
                    seed_dir = Path(t.work) / name / recipe / f"s{seed}"
                    test[recipe].append(score_test(fold_jobs, root_path, seed_dir, threads))
        reference = next(iter(oof.values()))[0]
        files = reference["file"].to_numpy()
        group_by = compose_run(list(mine[0].overrides)).data.split.group_by
        columns = scorable(root_path, group_by)
        keep = [meta.classes.index(c) for c in columns]
        spans = mixed_spans(root_path)
        truth = oof_truth(meta, reference, spans)[:, keep]
        oof_runs, folds = {}, [r["fold"].to_numpy() for r in oof[t.compare[0]]]
        for recipe, runs in oof.items():
            for r, fold in zip(runs, folds, strict=True):
                if not (r["row_id"].equals(reference["row_id"]) and (r["fold"] == fold).all()):
                    raise DataError(f"{recipe}: its OOF rows differ from the others' ({name}).")
            oof_runs[recipe] = [r[columns].to_numpy(float) for r in runs]
        sections = {"oof": (truth, oof_runs, files, folds)}
        solution = load_soundscape_labels(root_path, meta.classes) if t.test else None
        if solution is not None and all(test.values()):
            solution = solution.sort_values("row_id").reset_index(drop=True)
            test_runs = {
                recipe: [
                    r.set_index("row_id").loc[solution["row_id"], meta.classes].to_numpy(float)
                    for r in runs
                ]
                for recipe, runs in test.items()
            }
            sections["test"] = (
                solution[meta.classes].to_numpy(),
                test_runs,
                solution["stem"].to_numpy(),
                None,  # one model (the folds averaged) scores every test row
            )
        for record in summarise(name, sections, t):
            records.append({**record, "oof_classes": len(columns),
                            "oof_truth": "recordings" if spans is None else "rows"})  # fmt: skip
    return pd.DataFrame(records)


def root_of(job: Job) -> Path:
    """The data root a job trains on (the synthetic set's folder for a root of null)."""
    return data_root(compose_run(list(job.overrides)))


def summarise(name: str, sections: dict, t: DictConfig) -> list[dict]:
    """One record per recipe: each section's estimate and interval, and the paired difference."""
    records = {
        recipe: {"root": name, "recipe": recipe, "seeds": len(as_list(t.seeds))}
        for recipe in t.compare
    }
    for section, (truth, runs, files, strata) in sections.items():
        reps = bootstrap(truth, runs, files, int(t.bootstrap), seed=0, strata=strata)
        jack = jackknife(truth, runs, files, strata)
        points = {r: point_estimate(truth, s, strata) for r, s in runs.items()}
        for recipe in t.compare:
            rec = records[recipe]
            iv = interval(points[recipe], reps[recipe], jack[recipe])
            rec.update({f"{section}_auc": iv.point, f"{section}_low": iv.low, f"{section}_high": iv.high,
                        f"{section}_files": len(np.unique(files))})  # fmt: skip
            if t.baseline is not None and recipe != t.baseline:
                diff, share = paired(
                    points[recipe], points[t.baseline], reps[recipe], reps[t.baseline],
                    jack[recipe], jack[t.baseline],
                )  # fmt: skip
                rec.update({f"{section}_diff": diff.point, f"{section}_diff_low": diff.low,
                            f"{section}_diff_high": diff.high, f"{section}_conf_better": share})  # fmt: skip
    return list(records.values())


def markdown(results: pd.DataFrame, t: DictConfig, command: str) -> str:
    """The results table, headed by the command that made it."""
    lines = [f"# {t.title}\n", "Made by:\n", f"```bash\n{command}\n```\n",
             f"{t.folds}-fold cross-validation grouped by recording; seeds {list(as_list(t.seeds))}; "
             f"95% BCa intervals by bootstrap over files and seeds ({t.bootstrap} draws); differences "
             f"are paired, against `{t.baseline}`, with the one-sided BCa confidence that the recipe is "
             "better (`conf. better`). OOF: every training recording's 5-s rows, "
             "scored by the fold model that did not train on it, over the classes whose "
             "recordings fall in two or more folds (a class with one recording cannot be "
             "scored out of fold); a positive row is ranked only against negative rows of its "
             "own fold, since each fold's model is calibrated its own way. Test: the labelled "
             "test soundscapes, scored once by the fold models averaged.\n"]  # fmt: skip
    for root, part in results.groupby("root", sort=False):
        counts = part.iloc[0]
        lines.append(f"## {root}\n")
        lines.append(
            f"OOF: {counts['oof_files']} recordings, {counts['oof_classes']} classes scored"
            + (f"; test: {counts['test_files']} soundscapes" if "test_files" in part else "")
            + ".\n"
            + (
                f"\nA secondary species counts as present on the OOF rows that hold at least "
                f"{MIN_OVERLAP_SECONDS:g} s of the window mixed in (`mixed_sources.csv`), not on "
                "every row of its recording.\n"
                if counts.get("oof_truth") == "rows"
                else ""
            )
        )
        has_test = "test_auc" in part and part["test_auc"].notna().any()
        head = ["recipe", "OOF AUC [95%]"] + (
            [f"Δ OOF vs {t.baseline}", "conf. better"] if t.baseline else []
        )
        if has_test:
            head += ["test AUC [95%]"] + (
                [f"Δ test vs {t.baseline}", "conf. better"] if t.baseline else []
            )
        lines += [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        ]
        for r in part.to_dict("records"):
            cells = [f"`{r['recipe']}`"]
            sections = ["oof", "test"] if has_test else ["oof"]
            for s in sections:
                cells.append(f"{r[f'{s}_auc']:.3f} [{r[f'{s}_low']:.3f}, {r[f'{s}_high']:.3f}]")
                if t.baseline:
                    if r["recipe"] == t.baseline:
                        cells += ["(baseline)", ""]
                    else:
                        cells += [f"{r[f'{s}_diff']:+.3f} [{r[f'{s}_diff_low']:+.3f}, {r[f'{s}_diff_high']:+.3f}]",
                                  f"{r[f'{s}_conf_better']:.2f}"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    recipes = "\n".join(
        f"- `{k}`: `{' '.join(recipe_overrides(k, t.recipes[k])) or '(the defaults)'}`"
        for k in t.compare
    )
    lines += ["Recipes:\n", recipes, ""]
    return "\n".join(lines)


def command(cfg: DictConfig) -> str:
    """This run's command line, each override shell-quoted so the page's command can be pasted."""
    given = HydraConfig.get().overrides.task if HydraConfig.initialized() else ["task=evaluate"]
    return shell_command(list(given))


def shell_command(overrides: list[str]) -> str:
    return " ".join(["python run.py", *(shlex.quote(o) for o in overrides)])


@task
def run(cfg: DictConfig) -> dict:
    t = cfg.task
    jobs = plan(cfg)
    shards, shard = int(t.shards), int(t.shard)
    if not 0 <= shard < shards:
        raise ConfigError(f"task.shard={shard} must be in 0..task.shards-1 ({shards - 1}).")
    mine = [j for i, j in enumerate(jobs) if i % shards == shard]
    log.info("evaluate: %d fold jobs, %d in this shard", len(jobs), len(mine))
    for job in mine:
        run_job(job)
    if shards > 1:
        return {"evaluate/jobs": float(len(mine))}
    results = aggregate(cfg, jobs)
    out = Path(t.output) if t.output else run_dir(cfg)
    page = markdown(results, t, command(cfg))
    write_csv(out / "results.csv", results)
    write_text(out / "results.md", page)
    if t.page:  # a docs results page: the same file, where the site reads it
        write_text(t.page, page)
    log.info(
        "wrote %s and %s%s",
        out / "results.csv",
        out / "results.md",
        f" and {t.page}" if t.page else "",
    )
    metrics = {}
    for r in results.to_dict("records"):
        for key in ("oof_auc", "test_auc", "oof_diff", "test_diff"):
            if key in r and np.isfinite(r[key]):
                metrics[f"evaluate/{r['root']}/{r['recipe']}/{key}"] = float(r[key])
    return metrics
