"""The competition metric: macro ROC-AUC over the classes with a positive, as Kaggle scores it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .errors import DataError

ALL_POSITIVE = ("skip", "raise")  # what macro_auc does with a class positive in every row


def macro_auc(truth: np.ndarray, scores: np.ndarray, all_positive: str = "skip") -> float:
    """Macro ROC-AUC over the columns of `truth` that have at least one positive.

    Equals sklearn's `roc_auc_score(truth[:, scored], scores[:, scored],
    average="macro")` as the competition computes it (ties get half credit), via
    the rank-sum form so it is fast on many classes. Returns NaN when no column
    has a positive.

    A column positive in every row has no negative to rank against, so it has no
    AUC, and the Kaggle scorer gives no score at all (older sklearn raises there,
    recent sklearn returns NaN for the whole macro average). `all_positive` says what
    happens instead: "skip" leaves such columns out with a warning naming them (for
    validation, where a tiny set must not stop a run), "raise" stops with a
    ValueError naming them (the scorer's behaviour, `competition_score`).
    """
    if all_positive not in ALL_POSITIVE:
        raise ValueError(f"all_positive={all_positive!r} must be one of {ALL_POSITIVE}")
    truth = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and scores {scores.shape} must be equal 2-D shapes")
    n_pos = truth.sum(axis=0)
    n_neg = truth.shape[0] - n_pos
    no_negative = np.flatnonzero((n_pos > 0) & (n_neg == 0))
    if len(no_negative):
        message = (
            f"class column(s) {no_negative.tolist()[:10]} are positive in every row "
            f"({len(no_negative)} in all): ROC-AUC is undefined for them"
        )
        if all_positive == "raise":
            raise ValueError(f"{message}; the competition scorer cannot score such a solution.")
        warnings.warn(f"{message}; left out of the macro average.", stacklevel=2)
    scored = (n_pos > 0) & (n_neg > 0)
    if not scored.any():
        return float("nan")
    ranks = rankdata(scores[:, scored], axis=0)
    pos, neg = n_pos[scored], n_neg[scored]
    rank_sum = (ranks * truth[:, scored]).sum(axis=0)
    return float(np.mean((rank_sum - pos * (pos + 1) / 2) / (pos * neg)))


def stratified_macro_auc(truth: np.ndarray, scores: np.ndarray, strata: np.ndarray) -> float:
    """Macro ROC-AUC that ranks a positive only against negatives of its own stratum.

    Out-of-fold rows are scored by K different models, one per fold; each is calibrated
    its own way, and a class whose positives sit mostly in one fold is scored there by the
    model that saw least of it. A pooled AUC then ranks one model's scores against another's
    and can fall below chance for a good recipe. Here each class's AUC is the Mann-Whitney
    count over the positive-negative pairs within each stratum (fold), summed over strata
    and divided by the number of such pairs: the pair-weighted mean of the per-fold AUCs.
    With one stratum it equals `macro_auc`. Classes with no within-stratum pair are left out;
    NaN when none has one.
    """
    truth = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    strata = np.asarray(strata)
    if truth.shape != scores.shape or truth.ndim != 2 or strata.shape != truth.shape[:1]:
        raise ValueError(
            f"truth {truth.shape}, scores {scores.shape} and strata {strata.shape} must be "
            "[rows, classes], [rows, classes] and [rows]"
        )
    wins = np.zeros(truth.shape[1])
    pairs = np.zeros(truth.shape[1])
    for stratum in np.unique(strata):
        rows = strata == stratum
        t = truth[rows]
        pos = t.sum(axis=0)
        neg = len(t) - pos
        ranks = rankdata(scores[rows], axis=0)
        wins += (ranks * t).sum(axis=0) - pos * (pos + 1) / 2
        pairs += pos * neg
    scored = pairs > 0
    return float(np.mean(wins[scored] / pairs[scored])) if scored.any() else float("nan")


def competition_score(
    solution: pd.DataFrame, submission: pd.DataFrame, row_id: str = "row_id"
) -> float:
    """Score a submission frame against a solution frame as the Kaggle scorer does.

    Like it, refuses a solution with no positive at all or with a class positive in
    every row (ValueError naming the classes).
    """
    missing_rows = set(solution[row_id]) - set(submission[row_id])
    if missing_rows:
        raise ValueError(
            f"submission lacks {len(missing_rows)} row(s), e.g. {sorted(missing_rows)[:3]}"
        )
    extra_rows = set(submission[row_id]) - set(solution[row_id])
    if extra_rows:
        raise ValueError(
            f"submission has {len(extra_rows)} row(s) the solution lacks, e.g. "
            f"{sorted(extra_rows)[:3]}: each file gets one row per whole 5 s"
        )
    classes = [c for c in solution.columns if c != row_id]
    missing_cols = [c for c in classes if c not in submission]
    if missing_cols:
        raise ValueError(f"submission lacks class column(s) {missing_cols[:5]}")
    truth = solution[classes].to_numpy()
    if not (truth > 0).any():
        raise ValueError("the solution has no positive label: no class can be scored.")
    everywhere = [c for c, col in zip(classes, (truth > 0).all(axis=0), strict=True) if col]
    if everywhere:
        raise ValueError(
            f"class(es) {everywhere[:10]} are positive in every solution row: ROC-AUC is "
            "undefined for them and the competition scorer cannot score such a solution."
        )
    sub = submission.set_index(row_id).loc[solution[row_id], classes]
    return macro_auc(truth, sub.to_numpy(), all_positive="raise")


def read_solution(path: Path) -> pd.DataFrame:
    """A solution CSV: `row_id` and one 0/1 column per class (the competition's format)."""
    if not path.is_file():
        raise DataError(f"task.solution={path} not found; give a CSV of row_id + class columns.")
    table = pd.read_csv(path)
    if "row_id" not in table.columns:
        raise DataError(
            f"{path} has no row_id column; a solution is row_id + one column per class."
        )
    table["row_id"] = table["row_id"].astype(str)
    return table


def score_tables(solution: pd.DataFrame, submission: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The competition metric and a per-class table (positives, rows, AUC) of `submission`."""
    try:
        overall = competition_score(solution, submission)
    except ValueError as err:
        raise DataError(f"cannot score: {err}") from err
    classes = [c for c in solution.columns if c != "row_id"]
    sub = submission.set_index("row_id").loc[solution["row_id"], classes]
    rows = []
    for c in classes:
        truth = solution[c].to_numpy()
        positives = int((truth > 0).sum())
        scored = 0 < positives < len(truth)
        auc = macro_auc(truth[:, None], sub[c].to_numpy()[:, None]) if scored else float("nan")
        rows.append({"class": c, "positives": positives, "rows": len(truth), "auc": auc})
    return overall, pd.DataFrame(rows)
