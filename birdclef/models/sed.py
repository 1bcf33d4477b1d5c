"""SED net: a timm CNN's feature map, pooled over frequency, attention-pooled over time (PANNs).

The recipe of the top BirdCLEF solutions: per-frame class logits plus attention weights
(softmax over time); the window output is the attention-weighted sum of the frame outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from birdclef.core.errors import ConfigError
from birdclef.models.layers import build_input_norm
from birdclef.models.timm_nets import check_common, drop_path
from birdclef.models.weights import BACKBONE, classifier_names, create_backbone, load_weights

FREQ_POOLS = ("mean", "mean_max")
SMOOTH_FRAMES = 3  # frames of PANNs' max + mean smoothing over time before attention
PROBE_SHAPE = (1, 1, 64, 64)  # a small mel for finding the backbone layers SED never calls


def drop_unused_layers(backbone: nn.Module) -> list[str]:
    """Replace the backbone's top-level layers that `forward_features` never uses by Identity.

    Some timm models keep part of their head outside `forward_features` (MobileNetV3's
    `conv_head`, ConvNeXt's `head.norm`). SED reads the feature map only, so those weights
    would never get a gradient: dead parameters in the optimizer and checkpoints, and an
    error under DDP. Found by one probe forward/backward on zeros at construction.
    Returns the names of the replaced layers.
    """
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            backbone.forward_features(torch.zeros(PROBE_SHAPE)).float().sum().backward()
    except (RuntimeError, ValueError, AssertionError):
        return []  # e.g. a fixed input size; SEDNet.forward names the problem on real input
    finally:
        backbone.train(was_training)
    unused = [
        name
        for name, child in backbone.named_children()
        if (params := list(child.parameters())) and all(p.grad is None for p in params)
    ]
    for param in backbone.parameters():
        param.grad = None
    for name in unused:
        setattr(backbone, name, nn.Identity())
    return unused


class AttBlock(nn.Module):
    """Attention pooling over time: [B, features, frames] -> window and frame logits.

    The window logit is the attention-weighted mean of the frame logits (PANNs' `clipwise`
    in logit space, so every loss, softmax or sigmoid, applies to both outputs alike).
    `tanh` bounds the attention logits, as in the Kaggle SED models, so no frame takes all.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.att = nn.Conv1d(in_features, num_classes, kernel_size=1)
        self.cla = nn.Conv1d(in_features, num_classes, kernel_size=1)
        for conv in (self.att, self.cla):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window logits [B, K], frame logits [B, K, T], attention weights [B, K, T]."""
        weights = torch.softmax(torch.tanh(self.att(x)), dim=-1)
        frames = self.cla(x)
        return (weights * frames).sum(dim=-1), frames, weights


class SEDNet(nn.Module):
    """Standardise, timm `forward_features`, pool frequency, smooth time, FC, attention pooling.

    Returns `{"logits": [B, outputs], "frame_logits": [B, frames, outputs]}`; the Classifier
    adds `frame_loss_weight` x the loss on the frame-wise maximum (0 turns that term off).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "efficientnet_b0",
        pretrained: bool = False,
        weights: str | None = None,
        freq_pool: str = "mean",
        drop_rate: float = 0.25,
        drop_path_rate: float = 0.0,
        frame_loss_weight: float = 0.5,
        input_norm: str = "window",
    ) -> None:
        super().__init__()
        check_common(pretrained, weights, drop_rate, drop_path_rate)
        if freq_pool not in FREQ_POOLS:
            raise ConfigError(f"model.freq_pool={freq_pool!r} must be one of {FREQ_POOLS}.")
        if frame_loss_weight < 0:
            raise ConfigError(f"model.frame_loss_weight={frame_loss_weight} must be >= 0.")
        self.freq_pool, self.frame_loss_weight = freq_pool, float(frame_loss_weight)
        self.norm = build_input_norm(input_norm)
        self.backbone = create_backbone(
            backbone, pretrained, num_classes=0, global_pool="", **drop_path(drop_path_rate)
        )
        unused = drop_unused_layers(self.backbone)
        width = self.backbone.num_features
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.att_block = AttBlock(width, num_classes)
        if weights:
            head = [f"{BACKBONE}.{n}" for n in (*classifier_names(self.backbone), *unused)]
            head.append("att_block")
            load_weights(self, weights, head=head)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.backbone.forward_features(self.norm(mel))
        if x.ndim != 4:
            raise ConfigError(
                f"model=sed needs a CNN backbone with a [B, C, freq, time] feature map; "
                f"{type(self.backbone).__name__} gives shape {list(x.shape)}."
            )
        pooled = x.mean(dim=2)
        if self.freq_pool == "mean_max":
            pooled = pooled + x.amax(dim=2)
        pad = SMOOTH_FRAMES // 2
        x = F.max_pool1d(pooled, SMOOTH_FRAMES, 1, pad) + F.avg_pool1d(
            pooled, SMOOTH_FRAMES, 1, pad
        )
        x = self.dropout(x).transpose(1, 2)
        x = self.dropout(F.relu(self.fc(x))).transpose(1, 2)
        window, frames, _ = self.att_block(x)
        return {"logits": window, "frame_logits": frames.transpose(1, 2)}
