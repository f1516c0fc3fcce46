"""The frozen LightGCN live on a graph with injected users, refreshed exactly.

With ``A`` the user-item 0/1 matrix and ``D_u``, ``D_i`` the degrees, one layer of
propagation is ``U_k = D_u^-1/2 A D_i^-1/2 I_(k-1)`` and ``I_k = D_i^-1/2 A' D_u^-1/2
U_(k-1)``. Two layers together are item to item: ``I_k = D_i^-1/2 C D_i^-1/2 I_(k-2)`` with
``C = A' D_u^-1 A``, the co-occurrence of items weighted by one over each holder's
profile length. So the item layers are

- ``I_1 = D_i^-1/2 Y`` with ``Y = A' D_u^-1/2 U_0`` (a sum over each item's holders), and
- ``I_k = D_i^-1/2 M_k`` with ``M_k = C Z_(k-2)``, ``Z_j = D_i^-1/2 I_j``, for k >= 2,

and a user's rows are sums over its own items: its final embedding, the mean of layers
0..L, is ``(U_0 + D_u^-1/2 A D_i^-1/2 T) / (L + 1)`` with ``T`` the items' sum of layers
0..L-1. Stored: ``Y`` and ``M_2..M_L`` (float64), ``T`` and the items' final embeddings;
no user row besides layer 0 (the trained table, or the fold-in rule for a later user).

Adding user ``v`` with items ``P`` changes ``Y`` on ``P`` (``v``'s term), the degree of the
items of ``P``, so ``Z_0`` and ``Z_1`` on ``P`` only, and ``C`` on ``P x P`` (``v``'s
weight ``1 / |P|``). Hence, exactly, ``M_k`` changes by ``C[:, P] dZ_(k-2)[P]`` plus
``v``'s term on the rows of ``P``: a product of the columns of ``C`` at the profile,
whatever share of the graph the three hops reach (at the ml20m scale, all items and
nine in ten users; a row-by-row refresh of the reached rows costs more than a full
recompute there). With more than 3 layers ``Z_2`` changes wherever ``M_2`` did and the
product widens to those columns. ``remove_user`` is the same with the signs turned. ``C``
is built once per state (dense or CSR, as item-kNN's counts) and never written: the
users added or removed since are kept as corrections, which are few. Every other table
is a copy-on-write overlay on a frozen base, so :meth:`LightGCNState.fork` is cheap and a
world holds only the rows its injections changed. The result equals
:func:`full_layers` on the same graph (the property tests check it).
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
from recsys_server.pinsage.overlay import RowOverlay, every_row
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
        self.item_ego = model.item_ego.weight.detach().numpy().astype(np.float64)
        self.item_ego.flags.writeable = False
        self.fold_in = model.fold_in.numpy().copy()
        self.recompute_all()

    def fork(self) -> LightGCNState:
        """An independent state sharing this one's frozen base: what a world starts from."""
        other = copy.copy(self)
        other.graph = self.graph.fork()
        other.sums = [table.fork() for table in self.sums]
        other.item_partial = self.item_partial.fork()
        other.item_final = self.item_final.fork()
        # rows and profiles are replaced, never written in place, so sharing them is safe
        other._late = dict(self._late)
        other._corrections = dict(self._corrections)
        return other

    def retrained(self, data: TargetData, epochs: int) -> LightGCNState:
        # imported here: training validates on full recomputes of its own
        from recsys_server.lightgcn.train import scheduled_retrain

        graph = self.graph.fork()
        return LightGCNState(scheduled_retrain(self.model, data, graph, epochs), graph)

    # --- full recompute ------------------------------------------------------------

    def recompute_all(self) -> None:
        """Every table from the current graph, as a new base."""
        graph = self.graph
        # users with an id from here on (injected later) keep their layer 0 in ``_late``
        self.n_rows = graph.n_users
        self.user_ego = ego_users(self.model, graph)
        self.user_ego.flags.writeable = False
        self._late: dict[int, np.ndarray] = {}
        matrix = graph.user_item_matrix()
        per_user = _inverse(np.diff(matrix.indptr))
        self.cooccurrence = graph.cooccurrence(per_user, np.float32)
        # users added (weight 1 / |P|) or removed (-1 / |P|) since C was built: their
        # profile and signed weight
        self._corrections: dict[int, tuple[np.ndarray, float]] = {}
        per_item = _inverse(graph.degree)[:, None]
        sums = [matrix.T @ (np.sqrt(per_user)[:, None] * self.user_ego)]  # Y
        scaled = [np.sqrt(per_item) * self.item_ego, per_item * sums[0]]  # Z_0, Z_1
        for k in range(2, self.n_layers + 1):  # M_k = C Z_(k-2), through the users
            sums.append(matrix.T @ (per_user[:, None] * (matrix @ scaled[k - 2])))
            scaled.append(per_item * sums[-1])
        sums = [np.asarray(table, dtype=np.float64) for table in sums]
        partial, final = self._item_means(np.arange(graph.n_items), sums)
        self.sums = [RowOverlay(table) for table in sums]
        self.item_partial = RowOverlay(partial.astype(np.float32))
        self.item_final = RowOverlay(final.astype(np.float32))

    # --- incremental ---------------------------------------------------------------

    def add_user(self, items: np.ndarray) -> int:
        items = np.asarray(items, dtype=np.int64)
        user = self.graph.add_user(items)
        ego = folded_in(self.item_ego, self.fold_in, self.graph, np.array([user]))[0]
        self._late[user] = ego
        self._refresh(items, ego, 1)
        self._correct(user, items, 1)
        return user

    def remove_user(self, user: int) -> None:
        items = self.graph.remove_user(user)
        ego = self.user_rows(0, np.array([user]))[0]
        self._refresh(items, ego, -1)
        self._correct(user, items, -1)
        self._late.pop(user, None)

    def _correct(self, user: int, items: np.ndarray, sign: int) -> None:
        """Record (or cancel) ``user``'s term of C since it was built."""
        if user in self._corrections:  # added since, removed now: no term either way
            del self._corrections[user]
        elif len(items):
            self._corrections[user] = (items, sign / len(items))

    def _refresh(self, items: np.ndarray, ego: np.ndarray, sign: int) -> None:
        """The graph has one more (``sign`` 1) or one fewer (-1) user with layer 0
        ``ego`` holding ``items`` (the degrees already count it): update every stored
        table by its exact change (module docstring)."""
        if len(items) == 0:  # no edges: no item row changes
            return
        items = np.unique(items)
        weight = sign / len(items)
        before = self.graph.degree.copy()
        before[items] -= sign
        # Z_j where it changed (on P for j < 2): rows, and values before and after
        changed = [items, items]
        old = [self._scaled(0, items, before), self._scaled(1, items, before)]
        self.sums[0][items] = self.sums[0][items] + sign * np.sqrt(1 / len(items)) * ego
        new = [self._scaled(0, items, None), self._scaled(1, items, None)]
        # M_2 and M_3 change by the same columns of C (Z_0 and Z_1 change on P only): one
        # product for both reads those columns once, the refresh's largest cost (26,744 x
        # 50 at ml20m scale; against two products, 53 ms where each took 48). In float32,
        # C's own precision: it halves the product's time and output, and each change it
        # adds to the float64 sums is off by float32 rounding of the change alone
        on_profile = min(self.n_layers - 1, 2)
        if on_profile:
            columns, reach = self._columns_reaching(items)
            deltas = np.hstack([new[j] - old[j] for j in range(on_profile)])
            products = np.hsplit(columns.T @ deltas.astype(np.float32), on_profile)
        touched = np.zeros(self.graph.n_items, dtype=bool)
        touched[items] = True
        for k in range(2, self.n_layers + 1):
            rows = changed[k - 2]
            if k - 2 < on_profile:
                update = products[k - 2]
            else:  # Z_(k-2) changed on the rows M_(k-2) did: the product widens to them
                columns, reach = self._columns_reaching(rows)
                update = columns.T @ (new[k - 2] - old[k - 2])
            # the user's own term of C, on the rows of P
            own = new[k - 2][np.searchsorted(rows, items)].sum(axis=0)
            update[np.searchsorted(reach, items)] += weight * own
            if k + 2 <= self.n_layers:  # Z_k feeds layer k + 2: its values before and after
                current = self.sums[k - 1][reach]
                self.sums[k - 1][reach] = values = current + update
                changed.append(reach)
                old.append(_inverse(before[reach])[:, None] * current)
                new.append(_inverse(self.graph.degree[reach])[:, None] * values)
            else:  # in place: no copy of the rows read or written (every item at ml20m)
                self.sums[k - 1].add(reach, update)
            touched[reach] = True
        touched_rows = np.flatnonzero(touched)
        if every_row(touched_rows, self.graph.n_items):
            tables = [table.whole() for table in self.sums]
        else:
            tables = [table[touched_rows] for table in self.sums]
        partial, final = self._item_means(touched_rows, tables)
        self.item_partial[touched_rows], self.item_final[touched_rows] = partial, final

    def _columns_reaching(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``C[:, rows]`` on the items it reaches (non-zero there, or in ``rows``), and
        those items (sorted)."""
        columns = self._cooccurrence_rows(rows)  # C[rows, :], that is C[:, rows]'
        reached = (columns != 0).any(axis=0)
        reached[rows] = True
        reach = np.flatnonzero(reached)
        return (columns if len(reach) == len(reached) else columns[:, reach]), reach

    def _cooccurrence_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the current graph's C, dense, in C's float32: the built table and the
        corrections."""
        base = self.cooccurrence[rows]
        out = np.asarray(base if isinstance(base, np.ndarray) else base.toarray(), np.float32)
        for profile, weight in self._corrections.values():
            inside = np.isin(rows, profile)
            if inside.any():
                out[np.ix_(np.flatnonzero(inside), profile)] += weight
        return out

    def _scaled(self, j: int, items: np.ndarray, degree: np.ndarray | None) -> np.ndarray:
        """``Z_j = D_i^-1/2 I_j`` of ``items`` for j < 2 (float64), under ``degree``
        (default: the graph's): ``D_i^-1/2`` times layer 0, ``D_i^-1`` times ``Y``."""
        degree = self.graph.degree[items] if degree is None else degree[items]
        if j == 0:
            return np.sqrt(_inverse(degree))[:, None] * self.item_ego[items]
        return _inverse(degree)[:, None] * self.sums[0][items]

    def _item_means(
        self, items: np.ndarray, sums: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``T`` (layers 0..L-1 summed) and the final embeddings of ``items`` (float64),
        from their rows of ``Y``, ``M_2``, ..., ``M_L`` (``sums``). In place on two new
        tables: at ml20m scale every item's rows are recomputed on every injection, and
        each whole-table temporary more costs about a millisecond."""
        scale = np.sqrt(_inverse(self.graph.degree[items]))[:, None]
        ego = self.item_ego if every_row(items, len(self.item_ego)) else self.item_ego[items]
        if len(sums) > 1:  # the inner layers' sums, scaled once
            partial = sums[0].copy()
            for table in sums[1:-1]:
                partial += table
            partial *= scale
            partial += ego
        else:
            partial = ego.copy()
        final = np.multiply(scale, sums[-1])
        final += partial
        final *= 1 / (self.n_layers + 1)
        return partial, final

    # --- reading -------------------------------------------------------------------

    def user_rows(self, k: int, users: np.ndarray) -> np.ndarray:
        """User layer k <= L of ``users``: layer 0 as stored (zeros for a removed late
        user), the others summed from their items' layer k-1."""
        users = np.asarray(users, dtype=np.int64)
        if k > 0:
            return self._propagated_to_users(users, lambda rows: self.item_rows(k - 1, rows))
        late = users >= self.n_rows
        out = np.zeros((len(users), self.dim), dtype=np.float32)
        out[~late] = self.user_ego[users[~late]]
        for position in np.flatnonzero(late).tolist():
            row = self._late.get(int(users[position]))
            if row is not None:
                out[position] = row
        return out

    def item_rows(self, k: int, items: np.ndarray) -> np.ndarray:
        """Item layer k <= L of ``items``."""
        items = np.asarray(items, dtype=np.int64)
        if k == 0:
            return self.item_ego[items].astype(np.float32)
        scale = np.sqrt(_inverse(self.graph.degree[items]))[:, None]
        return (scale * self.sums[k - 1][items]).astype(np.float32)

    def _propagated_to_users(
        self, users: np.ndarray, rows_of: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """One propagation step to ``users`` of the item rows ``rows_of`` gives."""
        indptr, items = self.graph.profiles_of(users)
        lengths = np.diff(indptr)
        weights = np.repeat(inverse_sqrt(lengths), lengths) * inverse_sqrt(self.graph.degree[items])
        return _weighted_sums(indptr, items, weights, rows_of, self.graph.n_items)

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """Final embeddings: the mean of layers 0..L, layers 1..L summed at once from the
        users' items' ``T``."""
        users = np.asarray(users, dtype=np.int64)
        total = self._propagated_to_users(users, lambda rows: self.item_partial[rows])
        return (total + self.user_rows(0, users)) / np.float32(self.n_layers + 1)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.item_final.dot_rows(self.user_vectors(users))

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), m) scores of each user's own ``items[r]`` row, without scoring the
        whole catalogue."""
        vectors = self.user_vectors(users)
        return np.matmul(self.item_final[items], vectors[:, :, None])[:, :, 0]


def _inverse(counts: np.ndarray) -> np.ndarray:
    """``1 / counts`` in float64, 0 where a count is 0 (a node without edges)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)


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
