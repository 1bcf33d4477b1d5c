"""What a training run shows: W&B naming from Hydra, per-class AUC, confused pairs, figures.

The tables and figures are written into the run folder (CSV + PNG, for any logger) and,
when the run logs to Weights & Biases, also logged there (`log_run_figures`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError
from birdclef.core.io import atomic_path, write_csv
from birdclef.core.metric import macro_auc

log = logging.getLogger(__name__)

DEFAULT_JOB_NAME = "run"  # Hydra's job name when not set: the script's name (run.py)

# Overrides that do not change a run's results: left out of run names and sweep tables.
HIDDEN_PREFIXES = ("paths.", "hydra.", "data.cache.workers", "rerun=")
MAX_TAG = 64  # characters: W&B refuses longer tags
TOP_PREDICTIONS = 3  # classes named under each spectrogram


# ---- W&B naming ------------------------------------------------------------------------------
def run_group(
    job_name: str | None, config_name: str | None, sweep_dir: str | None, multirun: bool
) -> str | None:
    """The W&B group of a run: the sweep it belongs to, or None for a single run.

    A `hydra.job.name=...` given by the user names it; else a sweep started from
    `multirun_sweeps/<name>.yaml` (`-cn <name>`) is `<name>`; else the sweep folder's
    last two parts (`multirun/<date>/<time>` -> `<date>/<time>`).
    """
    if job_name and job_name != DEFAULT_JOB_NAME:
        return job_name
    if not multirun:
        return None
    if config_name and config_name != "config":
        return config_name
    return "/".join(Path(sweep_dir).parts[-2:]) if sweep_dir else None


def run_tags(overrides: list[str]) -> list[str]:
    """The W&B tags of a run: its command-line overrides, less paths and Hydra settings."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(HIDDEN_PREFIXES)]
    return [o[:MAX_TAG] for o in kept]


def hydra_naming() -> tuple[str | None, list[str]]:
    """(group, tags) of the current Hydra job; (None, []) outside Hydra (tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, []
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    group = run_group(hc.job.name, hc.job.config_name, hc.sweep.dir, multirun)
    return group, run_tags(list(hc.overrides.task))


def wandb_logger(
    project: str, save_dir: str, offline: bool = True, group: str | None = None,
    tags: list[str] | None = None, name: str | None = None, log_model: bool = False,
):  # fmt: skip
    """Lightning's WandbLogger with group and tags from Hydra unless the config gives them."""
    from lightning.pytorch.loggers import WandbLogger

    hydra_group, hydra_tags = hydra_naming()
    tags = list(tags) if tags is not None else hydra_tags
    return WandbLogger(
        project=project, save_dir=save_dir, offline=offline, group=group or hydra_group,
        tags=tags or None, name=name, log_model=log_model,
    )  # fmt: skip


def is_wandb(logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def finish(logger, metrics: dict | None = None) -> None:
    """Put the run's final `metrics` in the W&B summary and end the run, so the next run of
    this process (a sweep job) starts its own; nothing for other loggers."""
    if is_wandb(logger):
        logger.experiment.summary.update(metrics or {})
        logger.experiment.finish()


# ---- tables ----------------------------------------------------------------------------------
def per_class_auc(truth: np.ndarray, scores: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per class: positives, rows, ROC-AUC (NaN without both positives and negatives)."""
    rows = []
    for c, name in enumerate(classes):
        positives = int((truth[:, c] > 0).sum())
        scored = 0 < positives < len(truth)
        auc = macro_auc(truth[:, [c]], scores[:, [c]]) if scored else float("nan")
        rows.append({"class": name, "positives": positives, "rows": len(truth), "auc": auc})
    return pd.DataFrame(rows)


def confused_pairs(
    truth: np.ndarray, scores: np.ndarray, classes: list[str], top: int = 10
) -> tuple[pd.DataFrame, float]:
    """The most common (true class, top-scored class) pairs where the top class is wrong.

    Over rows with at least one true class: a row whose highest-scored class is not one of
    its true classes counts once for each of its true classes. Also returns the share of
    those rows whose top class is right (top-1 accuracy).
    """
    has_truth = (truth > 0).any(axis=1)
    top_class = scores.argmax(axis=1)
    counts: dict[tuple[str, str], int] = {}
    right = 0
    for row in np.flatnonzero(has_truth):
        if truth[row, top_class[row]] > 0:
            right += 1
            continue
        for c in np.flatnonzero(truth[row] > 0):
            key = (classes[c], classes[top_class[row]])
            counts[key] = counts.get(key, 0) + 1
    pairs = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    table = pd.DataFrame(
        [(t, p, n) for (t, p), n in pairs], columns=["true_class", "predicted_class", "rows"]
    )
    return table, right / has_truth.sum() if has_truth.any() else float("nan")


# ---- figures ---------------------------------------------------------------------------------
def _save(fig, path: Path) -> Path:
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def spectrogram_figure(features: list[np.ndarray], titles: list[str], path: Path) -> Path:
    """A column of window images (features [bands, frames]) with their titles, as a PNG."""
    from birdclef.analysis.embed import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(len(features), 1, figsize=(8, 2.2 * len(features)), squeeze=False)
    for ax, image, title in zip(axes[:, 0], features, titles, strict=True):
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=8, loc="left")
        ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def bar_figure(labels: list[str], values: list[float], xlabel: str, path: Path) -> Path:
    """Horizontal bars (one per label, first on top), as a PNG."""
    from birdclef.analysis.embed import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.22 * len(labels) + 1.0))
    ax.barh(range(len(labels)), values, color="tab:blue")
    ax.set(yticks=range(len(labels)), xlabel=xlabel)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def window_title(
    truth_row: np.ndarray, score_row: np.ndarray, classes: list[str], name: str
) -> str:
    best = np.argsort(-score_row)[:TOP_PREDICTIONS]
    true = ", ".join(classes[c] for c in np.flatnonzero(truth_row > 0)) or "none"
    predicted = ", ".join(f"{classes[c]} {score_row[c]:.2f}" for c in best)
    mark = "right" if truth_row[best[0]] > 0 else "wrong"
    return f"{name}  truth: {true}  |  top {TOP_PREDICTIONS}: {predicted}  ({mark})"


def log_run_figures(
    out: Path, truth: np.ndarray, scores: np.ndarray, classes: list[str], row_names: list[str],
    window_features, logger=None, n_windows: int = 4, top_pairs: int = 10,
) -> dict[str, Path]:  # fmt: skip
    """Write (and log to W&B) the per-class AUC table, the confused pairs and the figures.

    `window_features(i)` gives row i's features [bands, frames] for the spectrogram panel,
    whose rows are `n_windows` rows with a true class, evenly spread over the set. Files:
    per_class_auc.csv, confused_pairs.csv and figures/{per_class_auc,confused_pairs,
    test_windows}.png (PNGs skipped, with a warning, without matplotlib).
    """
    out = Path(out)
    auc = per_class_auc(truth, scores, classes)
    pairs, top1 = confused_pairs(truth, scores, classes, top_pairs)
    written = {
        "per_class_auc": out / "per_class_auc.csv",
        "confused_pairs": out / "confused_pairs.csv",
    }
    write_csv(written["per_class_auc"], auc)
    write_csv(written["confused_pairs"], pairs)
    positive = np.flatnonzero((truth > 0).any(axis=1))
    picked = positive[np.linspace(0, len(positive) - 1, min(n_windows, len(positive))).astype(int)]
    try:
        scored = auc.dropna().sort_values("auc")
        figures = out / "figures"
        written["per_class_auc.png"] = bar_figure(
            scored["class"].tolist(), scored["auc"].tolist(), "ROC-AUC (test soundscapes)",
            figures / "per_class_auc.png",
        )  # fmt: skip
        if len(pairs):
            written["confused_pairs.png"] = bar_figure(
                [f"{t} -> {p}" for t, p in zip(pairs["true_class"], pairs["predicted_class"], strict=True)],
                pairs["rows"].tolist(), "rows whose top class is wrong", figures / "confused_pairs.png",
            )  # fmt: skip
        if len(picked):
            titles = [window_title(truth[i], scores[i], classes, row_names[i]) for i in picked]
            images = [np.asarray(window_features(int(i))) for i in picked]
            written["test_windows.png"] = spectrogram_figure(
                images, titles, figures / "test_windows.png"
            )
    except ConfigError as err:  # a missing extra must not fail a finished training run
        log.warning("run figures not drawn: %s", err)
    if is_wandb(logger):
        _to_wandb(logger, auc, pairs, top1, written)
    return written


def _to_wandb(logger, auc: pd.DataFrame, pairs: pd.DataFrame, top1: float, written) -> None:
    rows = [
        [c, p, n, None if np.isnan(a) else float(a)] for c, p, n, a in auc.itertuples(index=False)
    ]
    logger.log_table("test/per_class_auc", columns=list(auc.columns), data=rows)
    logger.log_table("test/confused_pairs", columns=list(pairs.columns), data=pairs.values.tolist())
    logger.experiment.summary["test/top1_accuracy"] = top1
    for key, path in written.items():
        if key.endswith(".png"):
            logger.log_image(f"figures/{key[:-4]}", images=[str(path)])
