"""Clustering heads (method.md "Model"): per modality H heads, each a 2-layer MLP
``Linear(d, d) -> BatchNorm1d -> ReLU -> Linear(d, K)``.

Head h of the audio side and head h of the visual side predict the same labels. The last layer of
each head is ``head.fc2`` (also ``head[-1]``): modality alignment permutes its output rows.
"""

from __future__ import annotations

import torch
from torch import nn


class ClusterHead(nn.Sequential):
    """``fc1 -> bn -> relu -> fc2``: ``[B, in_dim] -> [B, num_clusters]`` logits."""

    def __init__(self, in_dim: int, num_clusters: int, hidden_dim: int | None = None) -> None:
        hidden = int(hidden_dim or in_dim)
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_clusters)

    @property
    def num_clusters(self) -> int:
        return self.fc2.out_features


def make_heads(num_heads: int, in_dim: int, num_clusters: int) -> nn.ModuleList:
    """``num_heads`` independent :class:`ClusterHead` in an ``nn.ModuleList``."""
    if num_heads < 1 or num_clusters < 2:
        raise ValueError(f"need num_heads >= 1 and num_clusters >= 2, got {num_heads}, {num_clusters}")
    return nn.ModuleList(ClusterHead(in_dim, num_clusters) for _ in range(num_heads))


def stack_heads(heads: nn.ModuleList, features: torch.Tensor) -> torch.Tensor:
    """Logits of every head, stacked: ``[H, B, K]``, float32 (also under bf16 autocast)."""
    return torch.stack([head(features) for head in heads]).float()
