"""The study's frame clustering: K-means, agglomerative and DBSCAN on standardised mel or MFCC frames.

One point is one (pooled) frame of one recording; each recording is clustered on its own,
as in the study. Time continuity, which the study tried two ways, is one of:
- `index`: the standardised frame index, times `time_weight`, appended as a feature column;
- `connectivity`: agglomerative clustering may only merge time neighbours (a chain graph),
  the study's "hard-coded constraint";
- `mode`: each frame's label replaced by the most common label of the `smooth_frames`
  frames around it (a majority filter; a median of cluster ids would be meaningless).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scipy.ndimage import uniform_filter1d
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from birdclef.core.errors import ConfigError

LINKAGES = ("ward", "complete", "average", "single")
METHODS = ("kmeans", *LINKAGES, "dbscan")
CONTINUITY = ("none", "index", "connectivity", "mode")
FEATURES = ("mel", "mfcc")
BACKGROUND = "background"
KIND_ORDER = ("voice", "call", "secondary", "silence")  # where segments overlap, the first wins


def check_settings(method: str, continuity: str, features: str) -> None:
    """ConfigError naming the keys where a method, continuity or features value comes from."""
    for value, allowed, keys in (
        (method, METHODS, "task.methods / task.sweep.methods"),
        (continuity, CONTINUITY, "task.continuity / task.sweep.continuity"),
        (features, FEATURES, "task.features / task.sweep.features"),
    ):
        if value not in allowed:
            raise ConfigError(f"{value!r} ({keys}) is not one of {list(allowed)}.")


def frame_features(mel_frames: torch.Tensor, frontend, pool: int) -> np.ndarray:
    """Whole-recording dB frames [frames, n_mels] -> points [frames // pool, n_features].

    `frontend` is a MelFrontend, or an MfccFrontend for MFCC points: its `finish`
    applies the top-dB floor (over the whole recording) and, for MFCCs, the DCT.
    `pool` consecutive frames are averaged into one point.
    """
    values = frontend.finish(mel_frames.T).T.numpy()
    if pool > 1 and len(values) >= pool:
        n = (len(values) // pool) * pool
        values = values[:n].reshape(-1, pool, values.shape[1]).mean(axis=1)
    return np.ascontiguousarray(values, dtype=np.float64)


def standardize(points: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature (constant features stay 0)."""
    std = points.std(axis=0)
    return (points - points.mean(axis=0)) / np.where(std > 0, std, 1.0)


def with_time_index(points: np.ndarray, weight: float) -> np.ndarray:
    """Append the frame index, standardised and scaled by `weight`, as one more feature."""
    index = standardize(np.arange(len(points), dtype=np.float64)[:, None]) * weight
    return np.hstack([points, index])


def chain_connectivity(n: int) -> sparse.csr_matrix:
    """Each frame connected to the frames just before and after it."""
    return sparse.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1], shape=(n, n), format="csr")


def auto_eps(points: np.ndarray, min_samples: int, quantile: float) -> float:
    """A DBSCAN radius from the data: the `quantile` of the distances to the k-th neighbour."""
    k = min(min_samples, len(points) - 1)
    if k < 1:
        return 1.0
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return float(np.quantile(distances[:, -1], quantile)) or 1e-6


def cluster(
    points: np.ndarray, method: str, n_clusters: int = 2, continuity: str = "none",
    eps: float | None = None, min_samples: int = 10, eps_quantile: float = 0.5,
    time_weight: float = 1.0, smooth_frames: int = 9, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """Cluster ids, one per point of `points` [frames, features] (standardised here).

    DBSCAN's noise points get -1. `connectivity` applies to the agglomerative
    linkages only; with K-means or DBSCAN it raises ConfigError.
    """
    check_settings(method, continuity, "mel")
    x = standardize(points)
    if continuity == "index":
        x = with_time_index(x, time_weight)
    n_clusters = max(1, min(int(n_clusters), len(x)))
    if continuity == "connectivity" and method not in LINKAGES:
        raise ConfigError(
            f"clustering continuity=connectivity needs an agglomerative method {list(LINKAGES)}, "
            f"not {method!r}; use continuity=index or mode."
        )
    if method == "kmeans":
        labels = KMeans(n_clusters, n_init=4, random_state=seed).fit_predict(x)
    elif method in LINKAGES:
        connectivity = chain_connectivity(len(x)) if continuity == "connectivity" else None
        model = AgglomerativeClustering(n_clusters, linkage=method, connectivity=connectivity)
        labels = model.fit_predict(x)
    else:
        radius = eps if eps is not None else auto_eps(x, min_samples, eps_quantile)
        labels = DBSCAN(eps=radius, min_samples=min_samples).fit_predict(x)
    if continuity == "mode":
        labels = mode_filter(labels, smooth_frames)
    return labels.astype(int)


def mode_filter(labels: np.ndarray, width: int) -> np.ndarray:
    """Each label replaced by the most common label in a window of `width` frames around it."""
    labels = np.asarray(labels)
    if width <= 1 or len(labels) == 0:
        return labels
    values, codes = np.unique(labels, return_inverse=True)
    onehot = np.eye(len(values))[codes]
    shares = uniform_filter1d(onehot, size=int(width), axis=0, mode="nearest")
    return values[np.argmax(shares, axis=1)]


def truth_frames(
    segments: pd.DataFrame, primary: str, n: int, seconds_per_point: float
) -> np.ndarray:
    """The known label of each of `n` points: the call's class, voice, silence or background.

    `segments` holds one recording's rows of train_audio_segments.csv (start, end, kind,
    label); a point takes the segment covering its centre, voice first where they overlap.
    """
    centres = (np.arange(n) + 0.5) * seconds_per_point
    out = np.full(n, BACKGROUND, dtype=object)
    for kind in reversed(KIND_ORDER):  # later writes win: voice is written last
        for seg in segments[segments["kind"] == kind].itertuples():
            name = {"call": primary, "secondary": str(seg.label)}.get(kind, kind)
            out[(centres >= seg.start) & (centres < seg.end)] = name
    return out


def agreement(truth, labels) -> tuple[float, float]:
    """Adjusted Rand index and normalised mutual information of `labels` against `truth`."""
    return (
        float(adjusted_rand_score(truth, labels)),
        float(normalized_mutual_info_score(truth, labels)),
    )
