"""The competition metric and balanced accuracy as torchmetrics accumulators (`birdclef.core.metric` computes)."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from birdclef.core.metric import macro_auc


class CompetitionAUC(Metric):
    """Accumulates scores and 0/1 truth over an epoch; computes `macro_auc` on all rows pooled.

    A class positive in every row is left out with a warning (`macro_auc`'s "skip").
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("truth", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, truth: torch.Tensor) -> None:
        self.scores.append(scores.detach().float())
        self.truth.append(truth.detach().float())

    def compute(self) -> torch.Tensor:
        if (
            isinstance(self.scores, list) and not self.scores
        ):  # a tensor once synced across processes
            return torch.tensor(float("nan"))
        scores = dim_zero_cat(self.scores).cpu().numpy()
        truth = dim_zero_cat(self.truth).cpu().numpy()
        return torch.tensor(macro_auc(truth, scores), dtype=torch.float32)


class BalancedAccuracy(Metric):
    """Mean per-class recall of the arg-max class over classes present in the truth.

    Matches sklearn's `balanced_accuracy_score(primary, scores.argmax(1))`.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state(
            "hits", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state(
            "support", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, scores: torch.Tensor, primary: torch.Tensor) -> None:
        keep = primary >= 0
        primary, predicted = primary[keep], scores[keep].argmax(dim=-1)
        self.support += torch.bincount(primary, minlength=self.num_classes)
        self.hits += torch.bincount(primary[predicted == primary], minlength=self.num_classes)

    def compute(self) -> torch.Tensor:
        present = self.support > 0
        if not present.any():
            return torch.tensor(float("nan"))
        return (self.hits[present].float() / self.support[present].float()).mean()
