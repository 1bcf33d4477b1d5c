"""Training targets: informed label smoothing (softmax losses) and multi-label targets (sigmoid losses)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from birdclef.core.errors import ConfigError

NULL_CLASS = "null"


class InformedLabels:
    """Target vectors as the study defines them.

    The primary label gets `m`; each of the k secondary labels inside the taxonomy
    gets (1 - m) / k. With no such secondary label, the leftover 1 - m goes to an
    extra `null` class (when `null_class` is on) so every target sums to one;
    without the null class it stays on the primary (plain one-hot). Secondary
    labels outside the taxonomy, or equal to the primary, are ignored.
    """

    activation = "softmax"  # targets sum to one: for softmax losses

    def __init__(self, m: float = 1.0, null_class: bool = True) -> None:
        if not 0.0 < m <= 1.0:
            raise ConfigError(
                f"label.m={m} must be in (0, 1]: the weight kept on the primary label."
            )
        self.m = float(m)
        self.null_class = bool(null_class)

    def output_names(self, classes: Sequence[str]) -> list[str]:
        """Model output columns: the classes, then `null` when enabled."""
        if self.null_class and NULL_CLASS in classes:
            raise ConfigError(f"a class is named {NULL_CLASS!r}; set label.null_class=false.")
        return [*classes, NULL_CLASS] if self.null_class else list(classes)

    def encode(self, primary: str, secondary: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return self.encode_indexed(primary, secondary, index, len(classes))

    def encode_indexed(
        self, primary: str, secondary: Sequence[str], index: dict[str, int], n_classes: int
    ) -> np.ndarray:
        target = np.zeros(n_classes + int(self.null_class), dtype=np.float32)
        target[index[primary]] = self.m
        others = sorted({index[s] for s in secondary if s in index and s != primary})
        leftover = 1.0 - self.m
        if others:
            target[others] += leftover / len(others)
        elif self.null_class:
            target[n_classes] = leftover
        else:
            target[index[primary]] = 1.0
        return target

    def encode_all(
        self, primaries: Sequence[str], secondaries: Sequence[Sequence[str]], classes: Sequence[str]
    ) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.stack(
            [
                self.encode_indexed(p, s, index, len(classes))
                for p, s in zip(primaries, secondaries, strict=True)
            ]
        )


class MultiLabels:
    """Per-class targets for sigmoid losses: every species heard is a positive.

    The primary label gets `1 - smoothing`, each in-taxonomy secondary label
    `secondary_weight` (they are present, only less sure: with the softmax rule at
    m=1 they would be trained towards 0), every other class `smoothing`. No null
    class: a sigmoid output per class already says "none of them".
    """

    activation = "sigmoid"

    def __init__(self, secondary_weight: float = 0.5, smoothing: float = 0.0) -> None:
        if not 0.0 <= secondary_weight <= 1.0:
            raise ConfigError(f"label.secondary_weight={secondary_weight} must be in [0, 1].")
        if not 0.0 <= smoothing < 0.5:
            raise ConfigError(f"label.smoothing={smoothing} must be in [0, 0.5).")
        self.secondary_weight, self.smoothing = float(secondary_weight), float(smoothing)

    def output_names(self, classes: Sequence[str]) -> list[str]:
        return list(classes)

    def encode_all(
        self, primaries: Sequence[str], secondaries: Sequence[Sequence[str]], classes: Sequence[str]
    ) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        out = np.full((len(primaries), len(classes)), self.smoothing, dtype=np.float32)
        for row, (p, s) in enumerate(zip(primaries, secondaries, strict=True)):
            others = [index[x] for x in s if x in index and x != p]
            out[row, others] = np.maximum(self.secondary_weight, self.smoothing)
            out[row, index[p]] = 1.0 - self.smoothing
        return out


SOFTMAX_DEFAULTS = {"m": 1.0, "null_class": True}  # InformedLabels' settings and defaults
SIGMOID_DEFAULTS = {"secondary_weight": 0.5, "smoothing": 0.0}  # MultiLabels'


def target_rule(
    activation: str,
    m: float = 1.0,
    null_class: bool = True,
    secondary_weight: float = 0.5,
    smoothing: float = 0.0,
) -> InformedLabels | MultiLabels:
    """The label rule the loss needs (`activation`: the loss's), from the `label` group.

    Softmax losses get informed label smoothing, sigmoid losses multi-label targets; a
    setting of the other rule left away from its default would be silently ignored, so
    it is refused.
    """
    values = {"m": m, "null_class": null_class, "secondary_weight": secondary_weight,
              "smoothing": smoothing}  # fmt: skip
    own, other, kind = (
        (SOFTMAX_DEFAULTS, SIGMOID_DEFAULTS, "a softmax")
        if activation == "softmax"
        else (SIGMOID_DEFAULTS, SOFTMAX_DEFAULTS, "a sigmoid")
    )
    unused = [f"label.{k}={values[k]}" for k, default in other.items() if values[k] != default]
    if unused:
        losses = (
            "loss=focal or loss=ce" if other is SOFTMAX_DEFAULTS else "loss=bce or loss=focal_bce"
        )
        raise ConfigError(
            f"{' and '.join(unused)} set a rule {kind} loss does not use; they apply with "
            f"{losses}: drop them or change the loss."
        )
    if activation == "softmax":
        return InformedLabels(m, null_class)
    if activation == "sigmoid":
        return MultiLabels(secondary_weight, smoothing)
    raise ConfigError(f"unknown activation {activation!r}; use 'softmax' or 'sigmoid'.")


def presence(
    primaries: Sequence[str], secondaries: Sequence[Sequence[str]], classes: Sequence[str]
) -> np.ndarray:
    """Hard 0/1 presence (primary and in-taxonomy secondaries): the truth for validation AUC."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(primaries), len(classes)), dtype=np.float32)
    for row, (p, s) in enumerate(zip(primaries, secondaries, strict=True)):
        out[row, [index[x] for x in {p, *s} if x in index]] = 1.0
    return out
