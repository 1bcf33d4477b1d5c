import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from birdclef.core.metric import competition_score, macro_auc, stratified_macro_auc
from birdclef.modules.metrics import BalancedAccuracy, CompetitionAUC


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


def sklearn_or_nan(truth: np.ndarray, scores: np.ndarray) -> float:
    """The Kaggle scorer's sklearn call; NaN where it raises (older sklearn) instead of warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return sklearn_competition(truth, scores)
        except ValueError:
            return float("nan")


def test_a_class_positive_in_every_row_has_no_auc():
    truth = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.5, 0.6, 0.7], [0.3, 0.7, 0.2]])
    # the Kaggle scorer gives no score for such a solution
    assert np.isnan(sklearn_or_nan(truth, scores))
    # validation leaves the column out, says so, and scores the others as sklearn does
    with pytest.warns(UserWarning, match=r"class column\(s\) \[0\] are positive in every row"):
        value = macro_auc(truth, scores)
    assert value == pytest.approx(roc_auc_score(truth[:, 1:], scores[:, 1:], average="macro"))
    # class 1: positives 0.8, 0.6 vs negatives 0.2, 0.7 -> 3 of 4 pairs; class 2: 0.7 tops all
    assert value == pytest.approx((0.75 + 1.0) / 2)
    with pytest.raises(ValueError, match=r"class column\(s\) \[0\] are positive in every row"):
        macro_auc(truth, scores, all_positive="raise")
    with pytest.raises(ValueError, match="all_positive='keep' must be one of"):
        macro_auc(truth, scores, all_positive="keep")
    # the torchmetrics wrapper used for val/auc and test/soundscape_auc skips it too
    metric = CompetitionAUC()
    metric.update(torch.tensor(scores), torch.tensor(truth))
    with pytest.warns(UserWarning, match="left out of the macro average"):
        assert metric.compute().item() == pytest.approx(value)


def test_competition_score_refuses_what_the_kaggle_scorer_cannot_score():
    solution = pd.DataFrame({"row_id": ["s_5", "s_10"], "a": [1, 1], "b": [0, 1]})
    submission = pd.DataFrame({"row_id": ["s_5", "s_10"], "a": [0.2, 0.4], "b": [0.1, 0.9]})
    with pytest.raises(ValueError, match=r"class\(es\) \['a'\] are positive in every solution row"):
        competition_score(solution, submission)
    with pytest.raises(ValueError, match="no positive label"):
        competition_score(solution.assign(a=0, b=0), submission)


def test_stratified_auc_is_the_pair_weighted_mean_of_per_stratum_aucs():
    rng = np.random.default_rng(0)
    truth = rng.random((60, 4)) < 0.3
    scores = rng.random((60, 4)) + truth
    strata = np.repeat([0, 1, 2], 20)
    one = np.zeros(60)
    assert stratified_macro_auc(truth, scores, one) == pytest.approx(macro_auc(truth, scores))
    expected = []
    for c in range(4):
        wins = pairs = 0.0
        for s in range(3):
            t, x = truth[strata == s, c], scores[strata == s, c]
            pos, neg = x[t], x[~t]
            wins += (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
            pairs += len(pos) * len(neg)
        expected.append(wins / pairs)
    assert stratified_macro_auc(truth, scores, strata) == pytest.approx(np.mean(expected))


def test_stratified_auc_ignores_the_offset_between_fold_models():
    """Two folds' models, each ranking its rows perfectly, one calibrated far lower: pooled, the
    class's positives (mostly in the low fold) rank below the other fold's negatives."""
    truth = np.array([[1], [1], [1], [0], [1], [0], [0], [0]], dtype=bool)
    scores = np.array([0.3, 0.3, 0.3, 0.1, 0.9, 0.5, 0.5, 0.5])[:, None]  # fold 0 scores low
    strata = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert macro_auc(truth, scores) < 0.5
    assert stratified_macro_auc(truth, scores, strata) == 1.0
    # a class positive throughout one stratum has no pair there; none anywhere -> NaN
    assert np.isnan(stratified_macro_auc(truth, scores, np.arange(8)))
    with pytest.raises(ValueError, match="strata"):
        stratified_macro_auc(truth, scores, strata[:3])
