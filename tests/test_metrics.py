import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from birdclef.modules.metrics import BalancedAccuracy, CompetitionAUC, competition_score, macro_auc


def sklearn_competition(truth: np.ndarray, scores: np.ndarray) -> float:
    """The Kaggle scorer: sklearn macro AUC over columns with at least one positive."""
    scored = truth.sum(axis=0) > 0
    return roc_auc_score(truth[:, scored], scores[:, scored], average="macro")


@pytest.mark.parametrize("seed", range(5))
def test_macro_auc_equals_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    truth = (rng.random((300, 20)) < 0.1).astype(int)
    truth[:, :3] = 0  # classes with no positive are skipped, not padded
    truth[0, 5] = 1
    scores = rng.random((300, 20))
    scores[:, 7] = np.round(scores[:, 7], 1)  # ties get half credit in both
    assert macro_auc(truth, scores) == pytest.approx(sklearn_competition(truth, scores), abs=1e-12)


def test_macro_auc_known_values():
    truth = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.8]])
    # class 0: positives 0.9, 0.2 vs negatives 0.1, 0.3 -> 3 of 4 pairs; class 1: 1.0
    assert macro_auc(truth, scores) == pytest.approx((0.75 + 1.0) / 2)
    assert np.isnan(macro_auc(np.zeros((3, 2)), np.ones((3, 2))))


def test_competition_score_aligns_rows_and_columns():
    solution = pd.DataFrame(
        {"row_id": ["s_5", "s_10", "s_15"], "a": [1, 0, 0], "b": [0, 0, 1], "c": [0, 0, 0]}
    )
    submission = pd.DataFrame(
        {
            "row_id": ["s_15", "s_5", "s_10"],
            "c": [0.5, 0.5, 0.5],
            "b": [0.9, 0.1, 0.2],
            "a": [0.0, 1.0, 0.3],
        }
    )
    assert competition_score(solution, submission) == 1.0
    with pytest.raises(ValueError, match="lacks"):
        competition_score(solution, submission.iloc[:2])


def test_competition_auc_metric_accumulates_batches():
    rng = np.random.default_rng(3)
    truth = (rng.random((64, 6)) < 0.3).astype(np.float32)
    scores = rng.random((64, 6)).astype(np.float32)
    metric = CompetitionAUC()
    for part in np.array_split(np.arange(64), 4):
        metric.update(torch.from_numpy(scores[part]), torch.from_numpy(truth[part]))
    assert metric.compute().item() == pytest.approx(sklearn_competition(truth, scores), abs=1e-6)


def test_balanced_accuracy_equals_sklearn():
    rng = np.random.default_rng(4)
    primary = rng.integers(0, 7, 200)
    scores = rng.random((200, 9))
    scores[np.arange(100), primary[:100]] += 1.0  # half of them right
    metric = BalancedAccuracy(9)
    metric.update(torch.from_numpy(scores[:120]), torch.from_numpy(primary[:120]))
    metric.update(torch.from_numpy(scores[120:]), torch.from_numpy(primary[120:]))
    expected = balanced_accuracy_score(primary, scores.argmax(1))
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
