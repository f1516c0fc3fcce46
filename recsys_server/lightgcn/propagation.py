"""The symmetric-normalised user-item graph of LightGCN and its propagation.

One layer is ``E^(k+1) = D^-1/2 A D^-1/2 E^k`` on the bipartite graph: a user's next row is
the sum of its items' rows, each weighted ``1 / sqrt(d_user * d_item)``, and an item's the
same over its holders. The graph is bipartite, so the whole step is the user-item block
``N`` (users x items) and its transpose. A node without edges (an item nobody holds, an
empty profile) gets zero rows at every layer >= 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_server.graph import InteractionGraph


def inverse_sqrt(degree: np.ndarray) -> np.ndarray:
    """``1 / sqrt(degree)``, 0 where the degree is 0."""
    degree = np.asarray(degree, dtype=np.float64)
    out = np.zeros(len(degree), dtype=np.float64)
    np.divide(1.0, np.sqrt(degree), out=out, where=degree > 0)
    return out.astype(np.float32)


def normalised_matrix(graph: InteractionGraph) -> sp.csr_matrix:
    """``N``: the (graph.n_users, n_items) user-item block of ``D^-1/2 A D^-1/2``."""
    matrix = graph.user_item_matrix().astype(np.float32)
    users = inverse_sqrt(np.diff(matrix.indptr))
    items = inverse_sqrt(graph.degree)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    matrix.data = users[rows] * items[matrix.indices]
    return matrix


class _Product(torch.autograd.Function):
    """``matrix @ x`` with scipy, differentiable in ``x``: on the shared 2-core machine
    torch's sparse COO product of MovieTweetings' normalised matrix (40k entries, dim 32)
    took 45-60 ms forward and backward, scipy's 15 ms, and torch's took 300 ms with its
    default two threads beside other jobs (docs/victims.md, "LightGCN": 3-4x and 20x)."""

    @staticmethod
    def forward(
        ctx: Any, matrix: sp.csr_matrix, transpose: sp.csr_matrix, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.transpose = transpose
        return torch.from_numpy(np.asarray(matrix @ x.detach().numpy(), dtype=np.float32))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        product = ctx.transpose @ grad.detach().numpy()
        return None, None, torch.from_numpy(np.asarray(product, dtype=np.float32))


class Propagation:
    """``N`` and its transpose, for training and full recomputes."""

    def __init__(self, graph: InteractionGraph) -> None:
        self.user_item = normalised_matrix(graph)
        self.item_user = self.user_item.T.tocsr()

    def layers(
        self, users: torch.Tensor, items: torch.Tensor, n_layers: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer 0..n_layers of users and items from their layer 0 (ego) rows."""
        user_layers, item_layers = [users], [items]
        for _ in range(n_layers):
            user_layers.append(_Product.apply(self.user_item, self.item_user, item_layers[-1]))
            item_layers.append(_Product.apply(self.item_user, self.user_item, user_layers[-2]))
        return user_layers, item_layers
