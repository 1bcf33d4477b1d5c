"""EmbeddingHead: a small trainable classifier on cached BirdNET embeddings (transfer learning)."""

from __future__ import annotations

import torch
from torch import nn

from birdclef.core.errors import ConfigError

POOLINGS = ("mean", "meanmax")


class EmbeddingHead(nn.Module):
    """Embeddings [B, 1, dim, chunks] -> pool over chunks -> LayerNorm -> MLP -> logits [B, outputs].

    `pooling="meanmax"` concatenates the mean and the max over a window's chunks
    (a call heard in only one 3-s chunk still counts fully); `hidden=0` makes the
    MLP one linear layer. The LayerNorm puts embeddings of any scale on one footing.
    """

    input_size_arg = "embedding_dim"  # derived from the front end (birdclef.models.build)
    reads_embeddings = True

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int = 1024,
        hidden: int = 512,
        dropout: float = 0.2,
        pooling: str = "meanmax",
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or hidden < 0 or not 0 <= dropout < 1 or pooling not in POOLINGS:
            raise ConfigError(
                f"model.embedding_dim={embedding_dim} must be >= 1, model.hidden={hidden} >= 0, "
                f"model.dropout={dropout} in [0, 1) and model.pooling={pooling!r} one of {POOLINGS}."
            )
        self.embedding_dim, self.pooling = embedding_dim, pooling
        features = embedding_dim * (2 if pooling == "meanmax" else 1)
        if hidden:
            mlp = [
                nn.Linear(features, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            ]
        else:
            mlp = [nn.Dropout(dropout), nn.Linear(features, num_classes)]
        self.head = nn.Sequential(nn.LayerNorm(features), *mlp)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, dim, chunks] (or [B, dim, chunks]) -> [B, features], rejecting mel images."""
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.squeeze(1)
        if x.dim() != 3 or x.shape[1] != self.embedding_dim:
            raise ConfigError(
                f"model=birdnet expects BirdNET embeddings [batch, 1, {self.embedding_dim}, chunks] but "
                f"got {list(x.shape)}: use frontend=birdnet (model=birdnet selects it unless frontend= "
                "is also given), or set model.embedding_dim to the front end's embedding size."
            )
        if self.pooling == "mean":
            return x.mean(dim=-1)
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))
