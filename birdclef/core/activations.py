"""Scores in [0, 1] from a net's outputs: softmax across outputs or sigmoid per output."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

ACTIVATIONS = ("softmax", "sigmoid")


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; use one of {list(ACTIVATIONS)}.")
    return activation


def activate(logits, activation: str):
    """`logits` [..., outputs] -> scores, for numpy arrays (float64) and torch tensors (float32).

    Tensors are handled by their own methods, so this module needs no torch.
    """
    check_activation(activation)
    if isinstance(logits, np.ndarray):
        x = logits.astype(np.float64)
        if activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    x = logits.float()
    return x.sigmoid() if activation == "sigmoid" else x.softmax(dim=-1)
