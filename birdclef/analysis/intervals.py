"""95% intervals of the competition metric by bootstrap over files and seeds, and paired differences.

A file (a recording, a soundscape) is the unit that is resampled: its rows come along
together, since rows of one file are not independent. With several seeds, each replicate
also resamples the seeds, so an interval covers both the data and the training noise. Every
recipe is resampled with the same draws, so the difference of two recipes is paired: the
interval of A - B is far narrower than the two intervals suggest when both move together.

Intervals are bias-corrected and accelerated (BCa, Efron 1987), with the acceleration from
a jackknife over files: a macro AUC of resampled files is biased (a class whose few
positives are not drawn drops out of the average), so plain percentiles can sit off-centre.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from birdclef.core.metric import macro_auc, stratified_macro_auc

LEVEL = 0.95  # two-sided interval


@dataclass(frozen=True)
class Interval:
    point: float  # the estimate on all files (mean over seeds)
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def auc_quiet(truth: np.ndarray, scores: np.ndarray, strata: np.ndarray | None = None) -> float:
    """`macro_auc` (or `stratified_macro_auc` with `strata`, e.g. the fold of each OOF row),
    without a warning for a class positive in every resampled row."""
    if strata is not None:
        return stratified_macro_auc(truth, scores, strata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return macro_auc(truth, scores)


def _stratum(strata: list[np.ndarray] | None, seed: int, rows=slice(None)) -> np.ndarray | None:
    return None if strata is None else strata[seed][rows]


def point_estimate(
    truth: np.ndarray, runs: list[np.ndarray], strata: list[np.ndarray] | None = None
) -> float:
    """The mean over seeds of the metric on every row (`strata`: one array [rows] per seed)."""
    return float(np.mean([auc_quiet(truth, s, _stratum(strata, i)) for i, s in enumerate(runs)]))


def bootstrap(
    truth: np.ndarray,
    runs: dict[str, list[np.ndarray]],
    files: np.ndarray,
    n: int,
    seed: int = 0,
    strata: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Replicates [n] of each recipe's metric, files and seeds drawn alike for every recipe.

    `truth` [rows, classes]; `runs[name]` one score array [rows, classes] per seed (every
    recipe the same number of seeds, in the same order); `files` [rows] names each row's file;
    `strata` (one array [rows] per seed, e.g. the fold that scored each row): positives are
    ranked only against negatives of their own stratum (`stratified_macro_auc`).
    """
    counts = {len(v) for v in runs.values()}
    if len(counts) != 1:
        raise ValueError(f"every recipe needs the same seeds to be paired, got {counts}")
    n_seeds = counts.pop()
    names, codes = np.unique(files, return_inverse=True)
    rows_of = [np.flatnonzero(codes == i) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    out = {name: np.empty(n) for name in runs}
    for b in range(n):
        picked = rng.integers(0, len(rows_of), len(rows_of))
        rows = np.concatenate([rows_of[i] for i in picked])
        seeds = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        for name, scores in runs.items():
            out[name][b] = np.mean(
                [auc_quiet(truth[rows], scores[s][rows], _stratum(strata, s, rows)) for s in seeds]
            )
    return out


def jackknife(
    truth: np.ndarray,
    runs: dict[str, list[np.ndarray]],
    files: np.ndarray,
    strata: list[np.ndarray] | None = None,
) -> dict:
    """Each recipe's metric with one file left out at a time [files] (mean over seeds)."""
    names, codes = np.unique(files, return_inverse=True)
    out = {name: np.empty(len(names)) for name in runs}
    for i in range(len(names)):
        keep = codes != i
        for name, scores in runs.items():
            out[name][i] = np.mean(
                [
                    auc_quiet(truth[keep], s[keep], _stratum(strata, j, keep))
                    for j, s in enumerate(scores)
                ]
            )
    return out


def bca_terms(point: float, finite: np.ndarray, jack: np.ndarray | None) -> tuple[float, float]:
    """(z0, a): the bias correction from the replicates, the acceleration from the jackknife."""
    if jack is None or not np.isfinite(jack).all() or len(jack) <= 2:
        return 0.0, 0.0
    below = np.clip((finite < point).mean() + 0.5 * (finite == point).mean(), 1e-6, 1 - 1e-6)
    z0 = NormalDist().inv_cdf(float(below))
    d = jack.mean() - jack
    spread = (d**2).sum()
    return z0, float((d**3).sum() / (6 * spread**1.5)) if spread > 0 else 0.0


def interval(point: float, replicates: np.ndarray, jack: np.ndarray | None = None) -> Interval:
    """The BCa interval of `replicates` around `point` (percentiles without `jack`, the
    leave-one-file-out values); NaN replicates are left out."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite) or not np.isfinite(point):
        return Interval(point, float("nan"), float("nan"))
    z0, a = bca_terms(point, finite, jack)
    tail = (1 - LEVEL) / 2
    z = [NormalDist().inv_cdf(q) for q in (tail, 1 - tail)]
    levels = [NormalDist().cdf(z0 + (z0 + zi) / (1 - a * (z0 + zi))) for zi in z]
    low, high = np.quantile(finite, levels)
    return Interval(point, float(low), float(high))


def confidence_above_zero(point: float, replicates: np.ndarray, jack: np.ndarray | None) -> float:
    """1 - alpha for the BCa bound at level alpha that meets 0: the one-sided confidence that
    the quantity (a difference) is positive, consistent with the interval."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite) or not np.isfinite(point):
        return float("nan")
    z0, a = bca_terms(point, finite, jack)
    share = float(np.clip((finite <= 0).mean(), 1e-6, 1 - 1e-6))
    w = NormalDist().inv_cdf(share) - z0
    z_alpha = (w * (1 - a * z0) - z0) / (1 + a * w)
    return 1.0 - NormalDist().cdf(z_alpha)


def paired(
    point_a: float, point_b: float, a: np.ndarray, b: np.ndarray,
    jack_a: np.ndarray | None = None, jack_b: np.ndarray | None = None,
) -> tuple[Interval, float]:  # fmt: skip
    """The interval of A - B from paired replicates, and the confidence that A > B."""
    diff = a - b
    jack = None if jack_a is None or jack_b is None else jack_a - jack_b
    point = point_a - point_b
    return interval(point, diff, jack), confidence_above_zero(point, diff, jack)
