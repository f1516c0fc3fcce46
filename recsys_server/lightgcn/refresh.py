"""The frozen LightGCN live on a graph with injected users, refreshed exactly.

Stored: users' layers 0..L-1 and items' layers 1..L (item layer 0 is the frozen ego table),
and items' final embeddings (the mean of their layers 0..L). A user's final embedding is
computed when read: its layer L is a sum over its own items' layer L-1, so it is never
stale and no injection has to touch the user rows of layer L.

Adding user ``v`` with items ``P`` changes ``v``'s layer 0 (the fold-in rule), the degree
of every item of ``P`` (so the weight ``1 / sqrt(d_u d_i)`` of every edge at those items)
and adds the edges ``v - P``. A row of layer k >= 1 changes when its own degree, a
neighbour's degree, its edges, or a neighbour's layer k-1 row changed, hence, layer by
layer:

- items of layer k: ``P``, and the items of the users whose layer k-1 changed;
- users of layer k: the holders of ``P`` (their edge to an item of ``P`` was reweighted)
  and the holders of the items whose layer k-1 changed.

With L = 3 that is ``P`` at item layer 1, the holders of ``P`` at user layers 1 and 2, and
their items at item layers 2 and 3. Rows of ``P`` and of users are recomputed from their
neighbours' current rows; the other items' rows (their edges and degree unchanged, often
most of the catalogue, with large holder lists) are updated by the change of their
changed holders' rows only, which costs the edges of those holders, not every edge of
every reached item. Item tables are float64 so those differences add no visible rounding
over any number of injections; the result equals :func:`full_layers` on the same graph.
``remove_user`` is the same with ``v`` gone. Every table is a copy-on-write overlay on a
frozen base, so :meth:`LightGCNState.fork` is cheap and a world holds only the rows its
injections changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, folded_in
from recsys_server.lightgcn.propagation import Propagation, inverse_sqrt
from recsys_server.pinsage.overlay import RowOverlay
from recsys_server.victims.base import ServingState


def ego_users(model: LightGCN, graph: InteractionGraph) -> np.ndarray:
    """Layer 0 of every user id of ``graph``: trained rows, the fold-in rule for injected
    users past the model's table, zeros for removed ones (they have no edges)."""
    ego = np.zeros((graph.n_users, model.config.dim), dtype=np.float32)
    trained = min(model.n_users, graph.n_users)
    ego[:trained] = model.user_ego.weight.detach().numpy()[:trained]
    new = np.array([u for u in graph.injected_users if u >= trained], dtype=np.int64)
    if len(new):
        item_ego, fold_in = model.item_ego.weight.detach().numpy(), model.fold_in.numpy()
        ego[new] = folded_in(item_ego, fold_in, graph, new)
    return ego


@torch.no_grad()
def full_layers(
    model: LightGCN, graph: InteractionGraph
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every user's and item's layers 0..L on ``graph``, from scratch."""
    users, items = Propagation(graph).layers(
        torch.from_numpy(ego_users(model, graph)), model.item_ego.weight, model.config.n_layers
    )
    return [u.numpy() for u in users], [i.numpy() for i in items]


class LightGCNState(ServingState):
    def __init__(self, model: LightGCN, graph: InteractionGraph) -> None:
        self.model = model.eval()
        self.graph = graph
        self.n_layers = model.config.n_layers
        self.dim = model.config.dim
        self.item_ego = model.item_ego.weight.detach().numpy().copy()
        self.item_ego.flags.writeable = False
        self.fold_in = model.fold_in.numpy().copy()
        self.recompute_all()

    def fork(self) -> LightGCNState:
        """An independent state sharing this one's frozen base: what a world starts from."""
        other = copy.copy(self)
        other.graph = self.graph.fork()
        other.user_layers = [table.fork() for table in self.user_layers]
        other.item_layers = [table.fork() for table in self.item_layers]
        other.item_final = self.item_final.fork()
        # rows are replaced, never written in place, so sharing the arrays is safe
        other._late = dict(self._late)
        return other

    def retrained(self, data: TargetData, epochs: int) -> LightGCNState:
        # imported here: training validates on full recomputes of its own
        from recsys_server.lightgcn.train import scheduled_retrain

        graph = self.graph.fork()
        return LightGCNState(scheduled_retrain(self.model, data, graph, epochs), graph)

    # --- full recompute ------------------------------------------------------------

    def recompute_all(self) -> None:
        """Every layer from the current graph, as a new base."""
        users, items = full_layers(self.model, self.graph)
        # users with an id from here on (injected later) keep their rows in ``_late``
        self.n_rows = self.graph.n_users
        self.user_layers = [RowOverlay(u) for u in users[: self.n_layers]]
        self.item_layers = [RowOverlay(i.astype(np.float64)) for i in items[1:]]
        self.item_final = RowOverlay(np.mean(items, axis=0, dtype=np.float32))
        self._late: dict[int, np.ndarray] = {}  # user -> (L, dim): its layers 0..L-1

    # --- incremental ---------------------------------------------------------------

    def add_user(self, items: np.ndarray) -> int:
        items = np.asarray(items, dtype=np.int64)
        user = self.graph.add_user(items)
        rows = np.zeros((self.n_layers, self.dim), dtype=np.float32)
        rows[0] = folded_in(self.item_ego, self.fold_in, self.graph, np.array([user]))[0]
        self._late[user] = rows
        self._refresh(items, np.array([user], dtype=np.int64))
        return user

    def remove_user(self, user: int) -> None:
        items = self.graph.remove_user(user)
        if user >= self.n_rows:
            del self._late[user]
        else:  # no edges left: zero at every layer >= 1, as a full recompute gives
            for table in self.user_layers[1:]:
                table[np.array([user])] = 0.0
        self._refresh(items, np.empty(0, dtype=np.int64))

    def _refresh(self, items: np.ndarray, new_user: np.ndarray) -> None:
        """Recompute layer by layer the rows that an edge change at ``items`` reaches
        (``new_user``: the added user, whose layer 0 is new; empty for a removal)."""
        reweighted = self._holders_of(items)
        users_before, rows_before = new_user, np.zeros((len(new_user), self.dim), np.float32)
        items_before = np.empty(0, dtype=np.int64)
        for k in range(1, self.n_layers + 1):
            self._set_item_rows(k, items)
            moved = self._add_to_item_rows(k, users_before, rows_before, items)
            items_before = np.union1d(items, moved)
            if k < self.n_layers:
                users_before = np.union1d(reweighted, self._holders_of(items_before))
                rows_before = self.user_rows(k, users_before)
                self._set_user_rows(k, users_before)
        layers = [self.item_ego[items_before]]
        layers += [table[items_before] for table in self.item_layers]
        self.item_final[items_before] = np.mean(layers, axis=0).astype(np.float32)

    def _add_to_item_rows(
        self, k: int, users: np.ndarray, rows_before: np.ndarray, recomputed: np.ndarray
    ) -> np.ndarray:
        """Item layer k of the items of ``users`` outside ``recomputed`` (their edges and
        degree did not change), by the change of those holders' layer k-1 (from
        ``rows_before`` to their current rows): the sum over holders, less the changed
        terms' old values, plus their new ones. Returns the items updated. Items are few,
        so their layers are float64 and the differences of any number of injections add
        no visible rounding."""
        indptr, held = self.graph.profiles_of(users)
        lengths = np.diff(indptr)
        skip = np.zeros(self.graph.n_items, dtype=bool)
        skip[recomputed] = True
        keep = ~skip[held]
        present = np.zeros(self.graph.n_items, dtype=bool)
        present[held[keep]] = True
        items = np.flatnonzero(present)
        if len(items) == 0:
            return items
        # sparse (items x users) incidence of the kept edges; positions without sorting
        position = np.cumsum(present) - 1
        spread = sp.csr_matrix(
            (
                np.ones(int(keep.sum())),
                (position[held[keep]], np.repeat(np.arange(len(users)), lengths)[keep]),
            ),
            shape=(len(items), len(users)),
        )
        change = (self.user_rows(k - 1, users) - rows_before) * inverse_sqrt(lengths)[:, None]
        added = spread @ change.astype(np.float64)
        table = self.item_layers[k - 1]
        table[items] = table[items] + added * inverse_sqrt(self.graph.degree[items])[:, None]
        return items

    def _holders_of(self, items: np.ndarray) -> np.ndarray:
        return np.unique(self.graph.holders_of(items)[1])

    def _set_item_rows(self, k: int, items: np.ndarray) -> None:
        """Item layer k of ``items`` from their holders' layer k-1."""
        indptr, users = self.graph.holders_of(items)
        weights = inverse_sqrt(self.graph.profile_length(users)) * np.repeat(
            inverse_sqrt(self.graph.degree[items]), np.diff(indptr)
        )
        self.item_layers[k - 1][items] = _weighted_sums(
            indptr, users, weights, lambda rows: self.user_rows(k - 1, rows), self.graph.n_users
        )

    def _set_user_rows(self, k: int, users: np.ndarray) -> None:
        """User layer k of ``users`` from their items' layer k-1."""
        values = self._propagated_to_users(k, users)
        late = users >= self.n_rows
        self.user_layers[k][users[~late]] = values[~late]
        for user, value in zip(users[late].tolist(), values[late], strict=True):
            rows = self._late[user].copy()  # replaced, not written: forks share the old one
            rows[k] = value
            self._late[user] = rows

    def _propagated_to_users(self, k: int, users: np.ndarray) -> np.ndarray:
        indptr, items = self.graph.profiles_of(users)
        lengths = np.diff(indptr)
        weights = np.repeat(inverse_sqrt(lengths), lengths) * inverse_sqrt(self.graph.degree[items])
        return _weighted_sums(
            indptr, items, weights, lambda rows: self.item_rows(k - 1, rows), self.graph.n_items
        )

    # --- reading -------------------------------------------------------------------

    def user_rows(self, k: int, users: np.ndarray) -> np.ndarray:
        """User layer k < L of ``users`` (zeros for a removed user)."""
        users = np.asarray(users, dtype=np.int64)
        late = users >= self.n_rows
        if not late.any():
            return self.user_layers[k][users]
        out = np.zeros((len(users), self.dim), dtype=np.float32)
        out[~late] = self.user_layers[k][users[~late]]
        for position in np.flatnonzero(late).tolist():
            rows = self._late.get(int(users[position]))
            if rows is not None:
                out[position] = rows[k]
        return out

    def item_rows(self, k: int, items: np.ndarray) -> np.ndarray:
        """Item layer k <= L of ``items``."""
        return self.item_ego[items] if k == 0 else self.item_layers[k - 1][items]

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """Final embeddings: the mean of layers 0..L, layer L summed from the users' items."""
        users = np.asarray(users, dtype=np.int64)
        total = self._propagated_to_users(self.n_layers, users)
        for k in range(self.n_layers):
            total += self.user_rows(k, users)
        return total / np.float32(self.n_layers + 1)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.item_final.dot_rows(self.user_vectors(users))

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), m) scores of each user's own ``items[r]`` row, without scoring the
        whole catalogue."""
        vectors = self.user_vectors(users)
        return np.matmul(self.item_final[items], vectors[:, :, None])[:, :, 0]


def _weighted_sums(
    indptr: np.ndarray,
    columns: np.ndarray,
    weights: np.ndarray,
    rows_of: Callable[[np.ndarray], np.ndarray],
    n_columns: int,
) -> np.ndarray:
    """Row r: the sum over entries indptr[r]:indptr[r+1] of weight * rows_of(column)."""
    if len(columns) >= n_columns:  # as many entries as the table has rows: read it whole
        unique, inverse = np.arange(n_columns), columns
    else:
        unique, inverse = np.unique(columns, return_inverse=True)
    matrix = sp.csr_matrix(
        (weights.astype(np.float32), inverse, indptr), shape=(len(indptr) - 1, len(unique))
    )
    return np.asarray(matrix @ rows_of(unique), dtype=np.float32)
