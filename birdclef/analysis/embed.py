"""Clip representations: the windows they are computed on, their scores (kNN, silhouette), UMAP.

Windows are cut at read time from a front end's frame cache (`select_windows`, `Windows`),
and a net function maps batches of them to vectors (`representation`; `pooled_stats` for
the log-mel and MFCC frames).

A representation is one vector per window ([items, dims]) with the window's class and
the recording it was cut from (its group). Scores are computed on standardised columns
(zero mean, unit variance), so no dimension dominates by its unit:
- kNN accuracy, leave-one-recording-out: each window is classified by the majority class
  of its k nearest (Euclidean) windows from *other* recordings, so neighbouring windows of
  the same recording (near-copies) cannot answer for it. Ties go to the class whose
  nearest voter is closest.
- silhouette (sklearn, Euclidean) of the class labels: 1 = tight separate classes,
  0 = overlapping, < 0 = windows closer to another class.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch  # imported before umap: umap may import tensorflow, which breaks a later torch import
from torch.utils.data import DataLoader, Dataset

from birdclef.core.errors import ConfigError
from birdclef.core.io import atomic_path
from birdclef.data.cache import CachedFrames
from birdclef.data.windows import recording_window_starts

log = logging.getLogger(__name__)

QUERY_BLOCK = 1024  # queries per distance block: bounds memory at (block x items) floats
INSTALL_HINT = "pip install -e '.[analysis]'"
MAX_LEGEND = 24  # classes named in a plot's legend; more are only coloured


class Stopwatch:
    """`with Stopwatch() as clock: ...`, then `clock.seconds` is the block's wall time."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def pooled_stats(features: torch.Tensor) -> np.ndarray:
    """Windows [B, (1,) bands, frames] -> [B, 2 x bands]: each band's mean, then its std over time."""
    x = features.float().flatten(0, -3) if features.dim() > 3 else features.float()
    return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=False)], dim=-1).numpy()


class Windows(Dataset):
    """Windows (file, start sample) cut from one front end's cached frames: items {"features"}."""

    def __init__(self, frames: CachedFrames, finish, files, starts, window_samples: int) -> None:
        self.frames, self.finish, self.window_samples = frames, finish, window_samples
        self.rec = [frames.position[f] for f in files]
        self.start = [int(round(s / frames.hop_length)) for s in starts]

    def __len__(self) -> int:
        return len(self.rec)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = self.window_samples // self.frames.hop_length
        with torch.no_grad():
            frames = self.frames.window(self.rec[i], self.start[i], n)
            return {"features": self.finish(frames).unsqueeze(0)}


def select_windows(
    frames: CachedFrames, meta, window_samples: int, per_recording, keep=None
) -> pd.DataFrame:
    """The first `per_recording` windows of each readable recording (all if null; only the
    files in `keep` if given), as a table of file, start (samples), label (class index) and
    recording (group index)."""
    first = meta.train.drop_duplicates("filename").set_index("filename")["primary_label"]
    lookup = {c: i for i, c in enumerate(meta.classes)}
    readable = [f for f in first.index if f in frames.position and (keep is None or f in keep)]
    rows = []
    for rec, file in enumerate(readable):
        starts = recording_window_starts(
            int(frames.index["n_samples"].iat[frames.position[file]]), window_samples
        )
        for s in starts[:per_recording] if per_recording else starts:
            rows.append((file, s, lookup[first[file]], rec))
    return pd.DataFrame(rows, columns=["file", "start", "label", "recording"])


def representation(net_fn, dataset: Dataset, batch_size: int) -> np.ndarray:
    """Apply `net_fn` (features batch -> [B, dims]) to every window, batch by batch."""
    loader = DataLoader(dataset, batch_size=batch_size)
    with torch.no_grad():
        return np.concatenate([np.asarray(net_fn(b["features"]), np.float64) for b in loader])


def standardize(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance (constant columns to zero)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def knn_accuracy(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None, k: int = 5
) -> float:
    """Leave-one-group-out kNN accuracy (see the module doc); NaN if no item has a neighbour.

    `groups=None` is plain leave-one-out (each item its own group). Items with no
    neighbour outside their group are left out of the accuracy.
    """
    if k < 1:
        raise ConfigError(f"task.k={k} must be >= 1.")
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    squared = (x**2).sum(axis=1)
    correct = counted = 0
    for first in range(0, len(x), QUERY_BLOCK):
        block = slice(first, first + QUERY_BLOCK)
        dist = squared[block, None] + squared[None, :] - 2.0 * x[block] @ x.T
        dist[groups[block, None] == groups[None, :]] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        for row, neighbours in enumerate(order):
            neighbours = neighbours[np.isfinite(dist[row, neighbours])]
            if len(neighbours) == 0:
                continue
            votes = labels[neighbours]
            values, counts = np.unique(votes, return_counts=True)
            winners = set(values[counts == counts.max()])
            guess = next(v for v in votes if v in winners)  # nearest voter among the tied
            correct += int(guess == labels[first + row])
            counted += 1
    return correct / counted if counted else float("nan")


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's silhouette score of `labels` (Euclidean); NaN with < 2 classes or no repeats."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if not 2 <= n_labels <= len(x) - 1:
        return float("nan")
    return float(silhouette_score(x, labels, metric="euclidean"))


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy of always answering the most common class: the floor kNN must beat."""
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / counts.sum())


def score(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int) -> dict[str, float]:
    """kNN accuracy and silhouette of one representation, on standardised columns."""
    z = standardize(x)
    return {
        "knn_accuracy": knn_accuracy(z, labels, groups, k),
        "silhouette": silhouette(z, labels),
    }


def _import_umap():
    """umap without its optional ParametricUMAP: that imports tensorflow (~15 s, and a triton
    imported after tensorflow segfaults in torch), so tensorflow is hidden while umap loads."""
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
    hidden = "tensorflow" not in sys.modules
    if hidden:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    finally:
        if hidden:
            del sys.modules["tensorflow"]
    return umap


def umap_2d(x: np.ndarray, seed: int, n_neighbors: int = 15) -> np.ndarray:
    """Standardised `x` -> 2-D UMAP coordinates [items, 2] (needs the `analysis` extra)."""
    try:
        umap = _import_umap()
    except ImportError as err:
        raise ConfigError(
            f"the UMAP plots need umap-learn ({err}): {INSTALL_HINT}, or set task.umap=false "
            "to score the representations without plots."
        ) from err
    z = standardize(x)
    neighbours = max(2, min(n_neighbors, len(z) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed, n_jobs=1)
    return reducer.fit_transform(z)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a clear error without the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ConfigError(
            f"the figures need matplotlib ({err}): {INSTALL_HINT}, or set task.umap=false."
        ) from err
    return plt


def plot_points(
    points: np.ndarray, labels: np.ndarray, classes: list[str], title: str, path: Path
) -> Path:
    """A 2-D scatter coloured by class (labels index `classes`), written as a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    cmap = plt.get_cmap("tab20")
    markers = "os^Dv<>Px*"
    for c in np.unique(labels):
        at = labels == c
        style = {"color": cmap(c % cmap.N), "marker": markers[(c // cmap.N) % len(markers)]}
        ax.scatter(*points[at].T, s=14, alpha=0.8, label=classes[c], **style)
    if len(np.unique(labels)) <= MAX_LEGEND:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set(title=title, xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """Rows of dicts -> a Markdown table; `columns` maps keys to headers, floats to 3 places."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |"]
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|")
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in columns) + " |" for r in rows]
    return "\n".join(lines)
