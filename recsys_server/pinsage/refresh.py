"""The frozen model's live state, kept current as users are injected and removed.

``add_user`` updates the graph, redoes the walks of the items whose walks the new holder
can reach (the profile's items where it joins the walk starters, and items whose longer
walks went on from the profile's items), then recomputes layer by layer only the item
rows whose inputs really changed (their degree feature, their own or a neighbour's
previous-layer row, or their neighbourhood). User vectors
are the mean of their items' current embeddings, computed when read, so no user vector is
ever stale and an injection costs nothing per user. After any sequence of injections the
state equals :meth:`EmbeddingState.recompute_all` on the same graph.

Every table is a copy-on-write overlay on a frozen base (:mod:`.overlay`), so
:meth:`EmbeddingState.fork` is cheap: the service's worlds are forks of the clean state,
each holding only the rows its own injections changed.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import GraphTensors, PinSage, degree_features, id_mask
from recsys_server.pinsage.overlay import RowOverlay, SetOverlay
from recsys_server.pinsage.sampler import Neighbourhoods, holder_priority, neighbourhoods_of
from recsys_server.victims.base import ServingState


class EmbeddingState(ServingState):
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
        self.content = np.ascontiguousarray(content, dtype=np.float32)
        self.id_mask = id_mask(self.config, graph.train_degree)
        self.default_user = model.default_user.detach().numpy().copy()
        self._build_base(neighbourhoods)

    def fork(self) -> EmbeddingState:
        """An independent state on the same graph and tables, sharing their frozen base:
        what a world starts from. Changes to either never reach the other."""
        other = copy.copy(self)
        other.graph = self.graph.fork()
        for name in (
            "degree",
            "hood_index",
            "hood_weight",
            "cutoff",
            "item_vectors",
            "item_bias",
            "through",
            "reverse_through",
        ):
            setattr(other, name, getattr(self, name).fork())
        other.hidden = [table.fork() for table in self.hidden]
        other.messages = [table.fork() for table in self.messages]
        return other

    def retrained(self, data: TargetData, epochs: int) -> EmbeddingState:
        # imported here: training builds states of its own to validate on
        from recsys_server.pinsage.train import scheduled_retrain

        graph = self.graph.fork()
        return EmbeddingState(
            scheduled_retrain(self.model, data, graph, epochs), graph, self.content
        )

    # --- full recompute ------------------------------------------------------------

    def recompute_all(self) -> None:
        """Every neighbourhood, layer and bias from the current graph, as a new base."""
        self._build_base(None)

    def _build_base(self, neighbourhoods: Neighbourhoods | None) -> None:
        n_items = self.graph.n_items
        hoods = neighbourhoods or neighbourhoods_of(
            self.graph, self.config.walks, np.arange(n_items)
        )
        index, weight = hoods.index.copy(), hoods.weight.copy()
        degree = self._degree_features(self.graph.degree)
        tensors = GraphTensors(
            content=torch.from_numpy(self.content),
            degree=torch.from_numpy(degree),
            id_mask=torch.from_numpy(self.id_mask),
            neighbour_index=torch.from_numpy(index),
            neighbour_weight=torch.from_numpy(weight),
        )
        with torch.no_grad():
            hidden, vectors, bias = self.model.all_layers(tensors)
            messages = [self.model.conv(k).message(hidden[k - 1]) for k in range(1, len(hidden))]
        self.degree = RowOverlay(degree)
        self.hood_index, self.hood_weight = RowOverlay(index), RowOverlay(weight)
        self.cutoff = RowOverlay(hoods.cutoff.copy())
        self.hidden = [RowOverlay(h.numpy()) for h in hidden]
        # messages[k - 1]: layer k's neighbour transform of hidden[k - 1], per item
        self.messages = [RowOverlay(m.numpy()) for m in messages]
        self.item_vectors, self.item_bias = RowOverlay(vectors.numpy()), RowOverlay(bias.numpy())
        self.through = SetOverlay(list(hoods.through))
        reverse: list[set[int]] = [set() for _ in range(n_items)]
        for item, through in enumerate(hoods.through):
            for start in through:
                reverse[start].add(item)
        self.reverse_through = SetOverlay([frozenset(r) for r in reverse])
        # row n: the items whose base neighbourhood holds item n
        used = weight > 0
        self._base_having = sp.csr_matrix(
            (np.ones(int(used.sum()), dtype=np.int8), (index[used], np.nonzero(used)[0])),
            shape=(n_items, n_items),
        )

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
        cutoff = self.cutoff[items]
        priority = holder_priority(self.config.walks, items, user)
        return items[(cutoff == 0) | (priority <= cutoff)]

    def _refresh_after_change(self, items: np.ndarray, starters: np.ndarray) -> None:
        walk_items = set(starters.tolist())
        for item in items.tolist():
            walk_items |= self.reverse_through[item]
        new_hoods = self._set_neighbourhoods(np.fromiter(sorted(walk_items), dtype=np.int64))
        input_rows = np.empty(0, dtype=np.int64)
        if self.config.use_degree:
            features = self._degree_features(self.graph.degree[items])
            moved = (features != self.degree[items]).any(axis=1)
            input_rows = items[moved]
            self.degree[input_rows] = features[moved]
        with torch.no_grad():
            self._recompute_layers(np.sort(input_rows), new_hoods)

    # --- internals -----------------------------------------------------------------

    def _set_neighbourhoods(self, items: np.ndarray) -> np.ndarray:
        """Redo the walks of ``items``; return those whose neighbourhood changed."""
        old_index, old_weight = self.hood_index[items], self.hood_weight[items]
        new = neighbourhoods_of(self.graph, self.config.walks, items)
        self.hood_index[items], self.hood_weight[items] = new.index, new.weight
        self.cutoff[items] = new.cutoff
        for item, through in zip(items.tolist(), new.through, strict=True):
            old = self.through[item]
            if old == through:
                continue
            for start in old - through:
                self.reverse_through[start] = self.reverse_through[start] - {item}
            for start in through - old:
                self.reverse_through[start] = self.reverse_through[start] | {item}
            self.through[item] = through
        same = (new.index == old_index).all(axis=1) & (new.weight == old_weight).all(axis=1)
        return items[~same]

    def _having_neighbours(self, items: np.ndarray) -> np.ndarray:
        """Items with any of ``items`` among their current neighbours: from the base's
        index for the neighbourhoods still as in the base, by a scan of the redone ones."""
        if len(items) == 0:
            return items
        from_base = np.unique(self._base_having[items].indices).astype(np.int64)
        from_base = from_base[~self.hood_index.is_private(from_base)]
        redone = self.hood_index.private_rows()
        if len(redone) == 0:
            return from_base
        marked = np.zeros(self.graph.n_items, dtype=bool)
        marked[items] = True
        holds = marked[self.hood_index[redone]] & (self.hood_weight[redone] > 0)
        return np.union1d(from_base, redone[holds.any(axis=1)])

    def _recompute_layers(self, input_rows: np.ndarray, new_hoods: np.ndarray) -> None:
        """Recompute the rows that depend on changed inputs or neighbourhoods: layer k's
        row of an item depends on its own and its neighbours' rows of layer k - 1, and on
        its neighbourhood."""
        model, t = self.model, torch.from_numpy
        if len(input_rows):
            rows = t(input_rows)
            degree, mask = t(self.degree[input_rows]), t(self.id_mask[input_rows])
            self.hidden[0][input_rows] = model.input_rows(
                rows, t(self.content[input_rows]), degree, mask
            ).numpy()
            self.item_bias[input_rows] = model.bias_rows(rows, degree, mask).numpy()
        changed = input_rows
        for k in range(1, self.config.n_layers + 1):
            if len(changed):
                previous = t(self.hidden[k - 1][changed])
                self.messages[k - 1][changed] = model.conv(k).message(previous).numpy()
            changed = np.union1d(
                np.union1d(changed, new_hoods), self._having_neighbours(changed)
            ).astype(np.int64)
            if len(changed) == 0:
                return
            self.hidden[k][changed] = model.conv_rows(
                k,
                t(self.hidden[k - 1][changed]),
                t(self.messages[k - 1][self.hood_index[changed]]),
                t(self.hood_weight[changed]),
            ).numpy()
        changed = model.final_rows(changed, input_rows)
        self.item_vectors[changed] = model.final(
            t(self.hidden[-1][changed]), t(self.hidden[0][changed])
        ).numpy()

    # --- reading -------------------------------------------------------------------

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """Mean of the users' items' embeddings; the learned default for an empty profile."""
        users = np.asarray(users, dtype=np.int64)
        if len(users) == 1:  # a /topk: a quarter of the batch's cost (its dozen numpy calls)
            return self._user_vector(int(users[0]))[None]
        indptr, items = self.graph.profiles_of(users)
        # one gather of every profile's rows, then per-user sums; a zero row at the end
        # keeps reduceat's indices in range when trailing profiles are empty
        gathered = np.zeros((len(items) + 1, self.config.dim))
        gathered[:-1] = self.item_vectors[items]
        sums = np.add.reduceat(gathered, indptr[:-1], axis=0)
        lengths = np.diff(indptr)
        vectors = sums / np.maximum(lengths, 1)[:, None]
        vectors[lengths == 0] = self.default_user
        return vectors.astype(np.float32)

    def _user_vector(self, user: int) -> np.ndarray:
        """One user's row of :meth:`user_vectors`, bit for bit: the same float64 sums, row
        by row in profile order (a reduction along the rows adds them in order, as
        ``reduceat`` does), the same division and rounding."""
        items = self.graph.profile(user)
        if len(items) == 0:
            return self.default_user.astype(np.float32)
        mean = self.item_vectors[items].sum(axis=0, dtype=np.float64) / len(items)
        return mean.astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_items) scores."""
        scores = self.item_vectors.dot_rows(self.user_vectors(users))
        scores += self.item_bias.dense()  # in place: the product is a new array
        return scores

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), m) scores of each user's own ``items[r]`` row, without scoring the
        whole catalogue (equal to ``scores`` up to float32 rounding)."""
        vectors = self.user_vectors(users)
        table = self.item_vectors[items]  # (len(users), m, dim)
        return np.matmul(table, vectors[:, :, None])[:, :, 0] + self.item_bias[items]
