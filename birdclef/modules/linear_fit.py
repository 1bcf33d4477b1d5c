"""The floor fitted to convergence: logistic regression on pooled band statistics, by full-batch L-BFGS.

`model=linear` (`PooledLinear`) is not trained by epochs of SGD: `fit_linear` reads every
training window once, standardises its band statistics, and minimises the regularised,
class-balanced logistic loss to convergence, the way scikit-learn's `LogisticRegression`
does (`C` scales the data term against `0.5 * ||W||^2`):

- sigmoid losses: one-vs-rest, each class's positives and negatives weighted to equal
  totals (`class_weight="balanced"`), soft targets allowed;
- softmax losses: multinomial, each window weighted by the inverse size of its primary class.

`C` is chosen on an inner K-fold of the training recordings (grouped by recording) by the
competition metric, then the model is refitted on every training window. Nothing of the
validation or test data is read.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from birdclef.core.activations import activate
from birdclef.core.metric import macro_auc
from birdclef.data.splits import fold_split

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried on the inner folds
DEFAULT_C = 0.1  # kept when the inner folds cannot score any class
INNER_FOLDS = 3  # inner K-fold of the training recordings that picks C
MAX_ITER = 500  # L-BFGS iterations at most (scikit-learn stops at 100)
TOLERANCE = 1e-6  # L-BFGS gradient tolerance on the normalised objective
READ_BATCH = 256  # windows per pass when reading the statistics


@torch.no_grad()
def window_statistics(net, dataset) -> torch.Tensor:
    """Every window's band statistics [N, 2F] (mean and std of each band over time)."""
    rows = []
    for start in range(0, len(dataset), READ_BATCH):
        items = [
            dataset[i]["features"] for i in range(start, min(start + READ_BATCH, len(dataset)))
        ]
        rows.append(net.statistics(torch.stack(items)).double())
    return torch.cat(rows)


def objective(logits, target, primary, activation: str) -> torch.Tensor:
    """The class-balanced logistic loss summed over windows (see the module docstring)."""
    if activation == "sigmoid":
        positives = target.sum(dim=0).clamp(min=1e-6)
        negatives = (len(target) - positives).clamp(min=1e-6)
        weight = target * (len(target) / (2 * positives)) + (1 - target) * (
            len(target) / (2 * negatives)
        )
        return (weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum()
    counts = torch.bincount(primary.clamp(min=0), minlength=target.shape[1]).double()
    weight = len(target) / (counts[primary.clamp(min=0)] * (counts > 0).sum())
    return (weight * -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1)).sum()


def fit(x, target, primary, activation: str, c: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(W [outputs, columns], b [outputs], final loss per window) of the L2-regularised fit.

    The objective `C * loss + 0.5 * ||W||^2` is divided by `C` and the number of terms, so
    L-BFGS's tolerances mean the same at every C and data size.
    """
    weight = torch.zeros(target.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(target.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=MAX_ITER, tolerance_grad=TOLERANCE, tolerance_change=TOLERANCE**2,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip
    terms = len(x) * (target.shape[1] if activation == "sigmoid" else 1)

    def closure():
        optimizer.zero_grad()
        data = objective(x @ weight.T + bias, target, primary, activation)
        loss = (c * data + 0.5 * (weight**2).sum()) / (c * terms)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        final = float(objective(x @ weight.T + bias, target, primary, activation)) / len(x)
    return weight.detach(), bias.detach(), final


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, var = x.mean(dim=0), x.var(dim=0, correction=0)
    return (x - mean) / torch.sqrt(var + 1e-5), mean, var


def choose_c(
    x, target, truth, primary, recordings: np.ndarray, activation: str, n_classes: int, seed: int
) -> tuple[float, dict[float, float]]:
    """The C of `C_GRID` with the best mean inner-fold macro AUC (grouped by recording).

    Only classes with recordings on both sides of an inner split can be scored; with none
    (every class one recording), `DEFAULT_C` is kept and the empty table says so.
    """
    frame = pd.DataFrame({"filename": recordings, "primary_label": primary.numpy()})
    per_class = frame.drop_duplicates("filename")["primary_label"].value_counts()
    scorable = np.zeros(n_classes, dtype=bool)
    scorable[per_class.index[per_class >= 2].to_numpy()] = True
    if frame["filename"].nunique() < INNER_FOLDS or not scorable.any():
        return DEFAULT_C, {}
    scores: dict[float, list[float]] = {c: [] for c in C_GRID}
    for fold in range(INNER_FOLDS):
        held = torch.from_numpy(fold_split(frame, INNER_FOLDS, fold, seed).copy())
        inner_x, mean, var = standardise(x[~held])
        outer_x = (x[held] - mean) / torch.sqrt(var + 1e-5)
        for c in C_GRID:
            w, b, _ = fit(inner_x, target[~held], primary[~held], activation, c)
            scored = activate(outer_x @ w.T + b, activation)[:, :n_classes]
            auc = macro_auc(truth[held][:, scorable].numpy(), scored[:, scorable].numpy())
            if np.isfinite(auc):
                scores[c].append(auc)
    means = {c: float(np.mean(v)) if v else float("nan") for c, v in scores.items()}
    finite = {c: m for c, m in means.items() if np.isfinite(m)}
    return (max(finite, key=finite.get) if finite else DEFAULT_C), means


def fit_linear(module, dm, seed: int) -> dict[str, float]:
    """Fit `module.net` (a `PooledLinear`) on `dm.train_set` to convergence; its metrics."""
    net, train = module.net, dm.train_set
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # small dense problems: one thread is fastest, and never oversubscribes
    try:
        return _fit_linear(module, net, train, dm, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_linear(module, net, train, dm, seed: int) -> dict[str, float]:
    x = window_statistics(net, train)
    target = torch.as_tensor(np.asarray(train.target), dtype=torch.float64)
    truth = torch.as_tensor(np.asarray(train.truth), dtype=torch.float64)
    primary = torch.as_tensor(np.asarray(train.primary), dtype=torch.int64)
    recordings = np.asarray(train.recording)
    c, inner = choose_c(
        x, target, truth, primary, recordings, module.activation, len(dm.classes), seed
    )
    standard, mean, var = standardise(x)
    weight, bias, final = fit(standard, target, primary, module.activation, c)
    with torch.no_grad():
        net.norm.mean.copy_(mean.float())
        net.norm.var.copy_(var.float())
        net.norm.count.fill_(float(len(x)))
        net.head.weight.copy_(weight.float())
        net.head.bias.copy_(bias.float())
    log.info(
        "linear floor: C=%g (mean inner-fold AUC by C: %s), fitted on %d windows",
        c, {k: round(v, 4) for k, v in inner.items()} or "no class to score, the default", len(x),
    )  # fmt: skip
    return {
        "train/loss": final,
        "floor/c": c,
        **{f"floor/inner_auc_c{k:g}": v for k, v in inner.items()},
    }
