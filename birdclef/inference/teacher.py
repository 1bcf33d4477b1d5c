"""A pseudo-label teacher: its models loaded and checked, its rows and SED frames blended per file.

Used by `task=pseudo_label` (birdclef.tasks.pseudo_label), not by a submission: it raises
the project's ConfigError, so `task=bundle` leaves it out of the bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..core.errors import ConfigError, InferenceError
from .blend import blend, check_weights
from .predict import FilePredictor, FileScores

log = logging.getLogger(__name__)

UNSCORED = 0.0  # pseudo-label of a class that no teacher model scores (foreign models only)


def load_teacher(s: dict, columns: list[str]) -> tuple[FilePredictor, list[str]]:
    """The teacher's models, checked against the data root's classes (keeping SED frames).

    Returns them and the classes no model scores (foreign models lacking them): those
    get pseudo-label UNSCORED.
    """
    predictor = FilePredictor(s["models"], s["threads"], s["stride_seconds"], file_frames=True)
    classes = [m.classes for m in predictor.models]
    for model, own in zip(s["models"], classes, strict=True):
        if set(own) != set(columns) or len(own) != len(columns):
            raise ConfigError(
                f"teacher model {model} predicts {len(own)} classes that differ from the "
                f"{len(columns)} classes of the data root's taxonomy (missing "
                f"{sorted(set(columns) - set(own))[:5]}, extra {sorted(set(own) - set(columns))[:5]}): "
                "a teacher must be trained on the taxonomy of the data it labels."
            )
    unscored = set(columns)
    for m in predictor.models:
        unscored &= set(getattr(m, "missing", ()))
    unscored = [c for c in columns if c in unscored]
    if unscored:
        log.warning("%d classes no teacher model scores get pseudo-label %g: %s",
                    len(unscored), UNSCORED, unscored[:10])  # fmt: skip
    return predictor, unscored


def sed_models(predictor: FilePredictor, s: dict) -> list[int]:
    """The indices of the teacher's SED models (outputs with `frame_scores`): they give frames.

    Refuses weights that give every SED model 0: their frames would blend nothing.
    """
    sed = [i for i, m in enumerate(predictor.models) if getattr(m, "has_frame_scores", False)]
    if sed and s["weights"] is not None and sum(s["weights"][i] for i in sed) <= 0:
        raise ConfigError(
            f"teacher.weights={s['weights']} gives the SED models {[s['models'][i] for i in sed]} "
            "weight 0, so their frames would blend nothing; give one of them a positive weight."
        )
    return sed


def blend_frames(
    result: FileScores, sed: Sequence[int], index: list[np.ndarray], s: dict
) -> np.ndarray:
    """One file's frames [rows * frames per row, classes]: its SED models' frames blended.

    Columns in the data root's order (`index`), the blend and weights of the rows; models
    with fewer frames per row are put on the finest grid first (`frames_on_grid`).
    """
    missing = [s["models"][m] for m in sed if m not in result.frame_scores]
    if missing:
        raise InferenceError(
            f"the SED models {missing} gave no frame scores for {result.path} though their "
            "outputs list frame_scores: export them again (task=export) or leave them out."
        )
    per_row = max(len(result.frame_scores[m]) // result.rows for m in sed)
    per_model = [
        frames_on_grid(result.frame_scores[m], result.rows, per_row)[:, index[m]] for m in sed
    ]
    weights = None if s["weights"] is None else [s["weights"][m] for m in sed]
    return blend_covered(per_model, s["blend"], weights, s["power"])


def frames_on_grid(frames: np.ndarray, n_rows: int, per_row: int) -> np.ndarray:
    """A model's file frames [n_rows * own, classes] on a grid of `per_row` frames per row.

    Each grid frame takes the model frame holding its centre: with `own` dividing `per_row`
    every model frame is repeated `per_row / own` times.
    """
    own = len(frames) // n_rows
    if own == per_row:
        return frames
    k = np.arange(n_rows * per_row)
    return frames[(2 * k + 1) * own // (2 * per_row)]


def blend_covered(per_model: list[np.ndarray], how: str, weights, power: float) -> np.ndarray:
    """`blend` where every model scores every class; else each cell blends only the models
    that score it (a foreign model's NaN columns), and a cell none scores gets UNSCORED."""
    if not any(np.isnan(p).any() for p in per_model):
        return blend(per_model, how, weights, power)
    w = check_weights(weights, len(per_model))[:, None, None]
    stack = np.stack(per_model).astype(np.float64)
    have = np.isfinite(stack)
    p = power if how == "power" else 1.0
    total = (w * have).sum(axis=0)
    mean = (w * np.where(have, stack, 0.0) ** p).sum(axis=0) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, mean ** (1.0 / p), UNSCORED).astype(np.float32)
