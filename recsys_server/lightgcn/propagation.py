"""The symmetric-normalised user-item graph of LightGCN and its propagation.

One layer is ``E^(k+1) = D^-1/2 A D^-1/2 E^k`` on the bipartite graph: a user's next row is
the sum of its items' rows, each weighted ``1 / sqrt(d_user * d_item)``, and an item's the
same over its holders. The graph is bipartite, so the whole step is the user-item block
``N`` (users x items) and its transpose. A node without edges (an item nobody holds, an
empty profile) gets zero rows at every layer >= 1.
"""

from __future__ import annotations

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


def _torch_sparse(matrix: sp.csr_matrix) -> torch.Tensor:
    coo = matrix.tocoo()
    return torch.sparse_coo_tensor(
        np.stack([coo.row, coo.col]).astype(np.int64),
        coo.data.astype(np.float32),
        coo.shape,
        check_invariants=True,
    ).coalesce()


class Propagation:
    """``N`` and its transpose as torch tensors, for training and full recomputes."""

    def __init__(self, graph: InteractionGraph) -> None:
        matrix = normalised_matrix(graph)
        self.user_item = _torch_sparse(matrix)
        self.item_user = _torch_sparse(matrix.T.tocsr())

    def layers(
        self, users: torch.Tensor, items: torch.Tensor, n_layers: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer 0..n_layers of users and items from their layer 0 (ego) rows."""
        user_layers, item_layers = [users], [items]
        for _ in range(n_layers):
            user_layers.append(torch.sparse.mm(self.user_item, item_layers[-1]))
            item_layers.append(torch.sparse.mm(self.item_user, user_layers[-2]))
        return user_layers, item_layers
