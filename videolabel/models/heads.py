"""Clustering heads (method.md "Model"): per modality H heads, each a 2-layer MLP
``Linear(d, d) -> BatchNorm1d -> ReLU -> Linear(d, K)``.

Head h of the audio side and head h of the visual side predict the same labels. The last layer of
each head is ``head.fc2`` (also ``head[-1]``): modality alignment permutes its output rows.
"""

from __future__ import annotations

import torch
from torch import nn


class ClusterHead(nn.Sequential):
    """``fc1 -> bn -> relu -> fc2``: ``[B, in_dim] -> [B, num_clusters]`` logits (``layers=2``, the paper's).

    ``layers=1``: a linear head, ``fc2`` alone on the features (fc1, bn and relu are identities)."""

    def __init__(self, in_dim: int, num_clusters: int, hidden_dim: int | None = None, layers: int = 2) -> None:
        if layers not in (1, 2):
            raise ValueError(f"a clustering head has 1 or 2 layers, got {layers}")
        hidden = int(hidden_dim or in_dim)
        super().__init__()
        if layers == 2:
            self.fc1: nn.Module = nn.Linear(in_dim, hidden)
            self.bn: nn.Module = nn.BatchNorm1d(hidden)
            self.relu: nn.Module = nn.ReLU(inplace=True)
        else:
            self.fc1, self.bn, self.relu, hidden = nn.Identity(), nn.Identity(), nn.Identity(), in_dim
        self.fc2 = nn.Linear(hidden, num_clusters)

    @property
    def num_clusters(self) -> int:
        return self.fc2.out_features


def make_heads(num_heads: int, in_dim: int, num_clusters: int, layers: int = 2) -> nn.ModuleList:
    """``num_heads`` independent :class:`ClusterHead` (of ``layers`` layers) in an ``nn.ModuleList``."""
    if num_heads < 1 or num_clusters < 2:
        raise ValueError(f"need num_heads >= 1 and num_clusters >= 2, got {num_heads}, {num_clusters}")
    return nn.ModuleList(ClusterHead(in_dim, num_clusters, layers=layers) for _ in range(num_heads))


def stack_heads(heads: nn.ModuleList, features: torch.Tensor) -> torch.Tensor:
    """Logits of every head, stacked: ``[H, B, K]``, float32 (also under bf16 autocast)."""
    return torch.stack([head(features) for head in heads]).float()
