"""The frozen model's live state, kept current as users are injected and removed.

``add_user`` updates the graph, redoes the walks of the items whose walks the new holder
can reach (the profile's items where it joins the walk starters, and items whose longer
walks went on from the profile's items), then recomputes layer by layer only the item
rows whose inputs really changed (their degree feature, their own or a neighbour's
previous-layer row, or their neighbourhood). User vectors
are the mean of their items' current embeddings, computed when read, so no user vector is
ever stale and an injection costs nothing per user. After any sequence of injections the
state equals :meth:`EmbeddingState.recompute_all` on the same graph.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_server.pinsage.graph import InteractionGraph
from recsys_server.pinsage.model import GraphTensors, PinSage, degree_features, id_mask
from recsys_server.pinsage.sampler import (
    Neighbourhoods,
    compute_neighbourhoods,
    empty_neighbourhoods,
    holder_priority,
)


class EmbeddingState:
    def __init__(
        self,
        model: PinSage,
        graph: InteractionGraph,
        content: np.ndarray,
        neighbourhoods: Neighbourhoods | None = None,
    ) -> None:
        """``neighbourhoods``: already computed for ``graph`` (training reuses its own)."""
        self.model = model.eval()
        self.graph = graph
        self.config = model.config
        n_items = graph.n_items
        self.neighbourhoods = empty_neighbourhoods(n_items, self.config.walks)
        if neighbourhoods is not None:
            self.neighbourhoods.index[:] = neighbourhoods.index
            self.neighbourhoods.weight[:] = neighbourhoods.weight
            self.neighbourhoods.through = list(neighbourhoods.through)
        self.tensors = GraphTensors(
            content=torch.as_tensor(content, dtype=torch.float32),
            degree=torch.as_tensor(
                degree_features(graph.degree, self.config.degree_steps_per_octave)
            ),
            id_mask=torch.as_tensor(id_mask(self.config, graph.train_degree)),
            neighbour_index=torch.from_numpy(self.neighbourhoods.index),
            neighbour_weight=torch.from_numpy(self.neighbourhoods.weight),
        )
        n_layers = self.config.n_layers
        self.hidden = [torch.zeros(n_items, self.config.dim) for _ in range(n_layers + 1)]
        # messages[k - 1]: layer k's neighbour transform of hidden[k - 1], per item
        self.messages = [torch.zeros(n_items, self.config.dim) for _ in range(n_layers)]
        self.item_vectors = torch.zeros(n_items, self.config.dim)
        self.item_bias = torch.zeros(n_items)
        self._reverse_through: list[set[int]] = [set() for _ in range(n_items)]
        with torch.no_grad():
            self.default_user = model.default_user.detach().clone()
        self.recompute_all(walk=neighbourhoods is None)

    # --- full recompute ------------------------------------------------------------

    def recompute_all(self, walk: bool = True) -> None:
        """Every neighbourhood, layer and bias from the current graph (``walk=False`` keeps
        the neighbourhoods and only rebuilds their indices)."""
        every = np.arange(self.graph.n_items)
        if walk:
            self._set_neighbourhoods(every)
        else:
            self._index_neighbourhoods(every)
        self.tensors.degree.copy_(torch.as_tensor(self._degree_features(self.graph.degree)))
        with torch.no_grad():
            self._recompute_layers(every, every)

    # --- incremental ---------------------------------------------------------------

    def add_user(self, items: np.ndarray) -> int:
        items = np.asarray(items, dtype=np.int64)
        # the walk-start cut-offs are read before the graph changes
        starters = self._walk_starters_changed(items, self.graph.n_users)
        user = self.graph.add_user(items)
        self._refresh_after_change(items, starters)
        return user

    def remove_user(self, user: int) -> None:
        items = self.graph.profile(user)
        starters = self._walk_starters_changed(items, user)
        self._refresh_after_change(self.graph.remove_user(user), starters)

    def _degree_features(self, degree: np.ndarray) -> np.ndarray:
        return degree_features(degree, self.config.degree_steps_per_octave)

    def _walk_starters_changed(self, items: np.ndarray, user: int) -> np.ndarray:
        """Items whose walk-starting holders gain or lose ``user``: where every holder
        starts walks, or where the user's priority is within the cut-off."""
        cutoff = self.neighbourhoods.cutoff[items]
        priority = holder_priority(self.config.walks, items, np.int64(user))
        return items[(cutoff == 0) | (priority <= cutoff)]

    def _refresh_after_change(self, items: np.ndarray, starters: np.ndarray) -> None:
        walk_items = set(starters.tolist())
        for item in items.tolist():
            walk_items |= self._reverse_through[item]
        new_hoods = self._set_neighbourhoods(np.fromiter(sorted(walk_items), dtype=np.int64))
        input_rows = np.empty(0, dtype=np.int64)
        if self.config.use_degree:
            features = torch.as_tensor(self._degree_features(self.graph.degree[items]))
            moved = (features != self.tensors.degree[items]).any(dim=1).numpy()
            input_rows = items[moved]
            self.tensors.degree[torch.from_numpy(input_rows)] = features[moved]
        with torch.no_grad():
            self._recompute_layers(input_rows, new_hoods)

    # --- internals -----------------------------------------------------------------

    def _set_neighbourhoods(self, items: np.ndarray) -> np.ndarray:
        """Redo the walks of ``items``; return those whose neighbourhood changed."""
        hoods = self.neighbourhoods
        old_index, old_weight = hoods.index[items].copy(), hoods.weight[items].copy()
        for item in items.tolist():
            for old in hoods.through[item]:
                self._reverse_through[old].discard(item)
        compute_neighbourhoods(self.graph, self.config.walks, items, hoods)
        self._index_neighbourhoods(items)
        same = (hoods.index[items] == old_index).all(axis=1) & (
            hoods.weight[items] == old_weight
        ).all(axis=1)
        return items[~same]

    def _index_neighbourhoods(self, items: np.ndarray) -> None:
        """Index which items' walks went on from which (only walks of 2+ hops do)."""
        hoods = self.neighbourhoods
        for item in items.tolist():
            for new in hoods.through[item]:
                self._reverse_through[new].add(item)

    def _having_neighbours(self, items: np.ndarray) -> np.ndarray:
        """Items with any of ``items`` among their neighbours (one vectorised pass)."""
        marked = np.zeros(self.graph.n_items, dtype=bool)
        marked[items] = True
        hoods = self.neighbourhoods
        return np.flatnonzero((marked[hoods.index] & (hoods.weight > 0)).any(axis=1))

    def _recompute_layers(self, input_rows: np.ndarray, new_hoods: np.ndarray) -> None:
        """Recompute the rows that depend on changed inputs or neighbourhoods: layer k's
        row of an item depends on its own and its neighbours' rows of layer k - 1, and on
        its neighbourhood."""
        model, g = self.model, self.tensors
        if len(input_rows):
            rows = torch.from_numpy(input_rows)
            self.hidden[0][rows] = model.input_rows(rows, g)
            self.item_bias[rows] = model.bias(rows, g)
        changed = np.unique(input_rows)
        for k in range(1, self.config.n_layers + 1):
            if len(changed):
                moved = torch.from_numpy(changed)
                self.messages[k - 1][moved] = model.convs[k - 1].message(self.hidden[k - 1][moved])
            changed = np.union1d(
                np.union1d(changed, new_hoods), self._having_neighbours(changed)
            ).astype(np.int64)
            if len(changed) == 0:
                return
            rows = torch.from_numpy(changed)
            self.hidden[k][rows] = model.conv_rows(k, self.hidden[k - 1], self.messages[k - 1],
                                                   rows, g)  # fmt: skip
        if self.config.residual:
            changed = np.union1d(changed, input_rows).astype(np.int64)
        rows = torch.from_numpy(changed)
        self.item_vectors[rows] = model.final(self.hidden[-1][rows], self.hidden[0][rows])

    # --- reading -------------------------------------------------------------------

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """Mean of the users' items' embeddings; the learned default for an empty profile."""
        users = np.asarray(users, dtype=np.int64)
        rows = self.graph.user_item_rows(users)
        lengths = np.asarray(rows.sum(axis=1)).ravel()
        vectors = (rows @ self.item_vectors.numpy().astype(np.float64)) / np.maximum(lengths, 1)[
            :, None
        ]
        vectors[lengths == 0] = self.default_user.numpy()
        return vectors.astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores."""
        return self.user_vectors(users) @ self.item_vectors.numpy().T + self.item_bias.numpy()

    def topk(self, user: int, k: int) -> np.ndarray:
        """The k best items the user does not hold, best first (ties by item id)."""
        scores = self.scores(np.array([user]))[0]
        scores[self.graph.profile(user)] = -np.inf
        ranked = np.lexsort((np.arange(len(scores)), -scores))
        return ranked[: min(k, len(scores) - len(self.graph.profile(user)))]
