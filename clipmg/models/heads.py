"""Projection heads that map an encoder's features into the shared image-text space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear -> Dropout, plus a residual from the first linear, then LayerNorm.

    The head of the original project (and of the well-known "simple CLIP" recipe it follows).
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        x = self.dropout(self.fc(self.gelu(projected)))
        return self.layer_norm(x + projected)
