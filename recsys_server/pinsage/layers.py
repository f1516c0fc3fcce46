"""PinSage's building blocks, each computing only the rows it is asked for.

Partial computation is what makes the incremental refresh exact: a layer computes rows
``R`` from those rows' inputs and their neighbours' messages, the same way whether ``R`` is
every item (training, full recompute) or the few items an injection touched.
"""

from __future__ import annotations

import torch
from torch import nn


class ItemInput(nn.Module):
    """h0 of an item: projected content features, plus (by variant) a popularity feature
    of its current degree and a learnable id embedding (for every item or warm items)."""

    def __init__(
        self, n_content: int, n_items: int, dim: int, n_degree: int, *, use_ids: bool,
        use_degree: bool,
    ):  # fmt: skip
        super().__init__()
        self.content = nn.Linear(n_content, dim)
        self.degree = nn.Linear(n_degree, dim) if use_degree else None
        self.ids = nn.Embedding(n_items, dim) if use_ids else None

    def forward(
        self,
        rows: torch.Tensor,
        content: torch.Tensor,
        degree_features: torch.Tensor,
        id_mask: torch.Tensor,
    ) -> torch.Tensor:
        """h0 of items ``rows`` from their own features (each argument has one row per item)."""
        h = self.content(content)
        if self.degree is not None:
            h = h + self.degree(degree_features)
        if self.ids is not None:
            h = h + self.ids(rows) * id_mask[:, None]
        return h


class WeightedSAGEConv(nn.Module):
    """Transform neighbours, visit-weighted mean, concatenate with self, ReLU, L2-normalise.

    The neighbour transform is a per-item table (:meth:`message`), computed once per item
    rather than once per (item, neighbour) pair; the live state keeps it and updates only
    the rows whose input changed.
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.neighbour = nn.Linear(dim_in, dim_in)
        self.combine = nn.Linear(2 * dim_in, dim_out)

    def message(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.neighbour(h))

    def forward(
        self, h_rows: torch.Tensor, neighbour_messages: torch.Tensor, neighbour_weight: torch.Tensor
    ) -> torch.Tensor:
        """Output rows from their own previous rows (R, d), their neighbours' messages
        (R, T, d) and visit counts (R, T)."""
        total = neighbour_weight.sum(dim=1, keepdim=True).clamp(min=1.0)
        weighted = neighbour_messages * neighbour_weight.unsqueeze(-1)
        aggregated = weighted.sum(dim=1) / total
        out = torch.relu(self.combine(torch.cat([h_rows, aggregated], dim=1)))
        return out / out.norm(dim=1, keepdim=True).clamp(min=1e-6)
