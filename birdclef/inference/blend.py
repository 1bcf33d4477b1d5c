"""Combining the row scores of several models: weighted `mean`, `rank` or `power` blends.

- `mean`: the weighted mean of the scores;
- `rank`: each model's scores replaced, class by class, by their rank over all rows of the
  run divided by the number of rows (so models on different scales count alike; only the
  ranking within a class is scored);
- `power`: the weighted power mean `(sum w s^p / sum w)^(1/p)`, p > 1 favouring confident models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import InferenceError

BLENDS = ("mean", "rank", "power")


def check_weights(weights, n_models: int) -> np.ndarray:
    if weights is None or len(weights) == 0:
        return np.full(n_models, 1.0 / n_models)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != n_models or (w < 0).any() or w.sum() <= 0:
        raise InferenceError(
            f"predict.weights={list(weights)} must give one non-negative weight per model "
            f"({n_models} models) with a positive sum, or be null for equal weights."
        )
    return w / w.sum()


def ranks(scores: np.ndarray) -> np.ndarray:
    """Per column, average rank / rows, in (0, 1]."""
    return (pd.DataFrame(scores).rank(method="average", pct=True).to_numpy()).astype(np.float32)


def blend(
    scores: list[np.ndarray], how: str = "rank", weights=None, power: float = 2.0
) -> np.ndarray:
    """Rows [rows, classes] of each model (same rows, same columns) -> one [rows, classes]."""
    if how not in BLENDS:
        raise InferenceError(f"predict.blend={how!r} is not one of {list(BLENDS)}.")
    w = check_weights(weights, len(scores))
    if len(scores) == 1:
        return scores[0]
    if how == "rank":
        scores = [ranks(s) for s in scores]
    if how == "power":
        if power <= 0:
            raise InferenceError(f"predict.power={power} must be positive.")
        mean = sum(
            wi * np.power(s.astype(np.float64), power) for wi, s in zip(w, scores, strict=True)
        )
        return np.power(mean, 1.0 / power).astype(np.float32)
    return sum(wi * s.astype(np.float64) for wi, s in zip(w, scores, strict=True)).astype(
        np.float32
    )
