"""The user-item interaction graph the recommender runs on: the frozen training graph plus
users injected after training, which can be added and removed again.

Holder lists (the users of an item) keep a fixed order: training users by id, then
injected users in the order they were added. The random walks index into these lists, so
two graphs with the same users in the same order give the same walks, whatever happened
in between (an injection that was later removed leaves no trace).
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp


class InteractionGraph:
    def __init__(self, train_rows: np.ndarray, n_users: int, n_items: int) -> None:
        """``train_rows``: (user, item, timestamp) rows, as in a scenario split."""
        order = np.lexsort((train_rows[:, 1], train_rows[:, 2], train_rows[:, 0]))
        rows = train_rows[order]
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows[:, 0], rows[:, 1])),
            shape=(n_users, n_items),
        )
        matrix.sum_duplicates()
        # profiles keep time order: the time-sorted rows, a repeated pair kept at its first
        _, first = np.unique(rows[:, 0] * np.int64(n_items) + rows[:, 1], return_index=True)
        rows = rows[np.sort(first)]
        self._base_indptr = np.zeros(n_users + 1, dtype=np.int64)
        self._base_indptr[1:] = np.cumsum(np.bincount(rows[:, 0], minlength=n_users))
        self._base_items = rows[:, 1].astype(np.int64)
        columns = matrix.tocsc()
        self._holder_indptr = columns.indptr.astype(np.int64)
        self._holder_users = columns.indices.astype(np.int64)  # sorted by user id
        self.n_base_users = n_users
        self.n_items = n_items
        self._injected: dict[int, np.ndarray] = {}  # user id -> profile, insertion order
        # item -> injected users; tuples, replaced on change, so forks share them
        self._injected_holders: dict[int, tuple[int, ...]] = {}
        self._next_user = n_users
        self.degree = np.diff(self._holder_indptr).astype(np.int64)
        self.train_degree = self.degree.copy()

    def fork(self) -> InteractionGraph:
        """An independent graph sharing this one's (never written) training arrays."""
        other = copy.copy(self)
        other._injected = dict(self._injected)
        other._injected_holders = dict(self._injected_holders)
        other.degree = self.degree.copy()
        return other

    # --- users ---------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        """Training users plus every injected user id handed out so far."""
        return self._next_user

    @property
    def injected_users(self) -> list[int]:
        return list(self._injected)

    def is_injected(self, user: int) -> bool:
        return user in self._injected

    def profile(self, user: int) -> np.ndarray:
        if user < self.n_base_users:
            return self._base_items[self._base_indptr[user] : self._base_indptr[user + 1]]
        try:
            return self._injected[user]
        except KeyError:
            raise KeyError(f"no user {user}") from None

    def profile_length(self, users: np.ndarray) -> np.ndarray:
        lengths = np.empty(len(users), dtype=np.int64)
        base = users < self.n_base_users
        lengths[base] = self._base_indptr[users[base] + 1] - self._base_indptr[users[base]]
        for position in np.flatnonzero(~base):
            lengths[position] = len(self._injected[int(users[position])])
        return lengths

    def profiles_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The users' profiles as CSR arrays: (indptr, items), profiles in time order."""
        if len(users) == 1:  # a /topk: the profile itself, not the batch gathers' overhead
            items = self.profile(int(users[0]))
            return np.array([0, len(items)], dtype=np.int64), items
        lengths = self.profile_length(users)
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        base = users < self.n_base_users
        if base.all():
            # one vectorised gather: each item's position in the base arrays
            return indptr, self._base_items[_ranges(self._base_indptr[users], lengths)]
        # training users in one gather as above, the few injected ones one by one
        items = np.empty(indptr[-1], dtype=np.int64)
        starts = self._base_indptr[users[base]]
        items[_ranges(indptr[:-1][base], lengths[base])] = self._base_items[
            _ranges(starts, lengths[base])
        ]
        for row in np.flatnonzero(~base).tolist():
            items[indptr[row] : indptr[row + 1]] = self._injected[int(users[row])]
        return indptr, items

    def add_user(self, items: np.ndarray) -> int:
        """Add a user holding ``items`` (oldest first, no repeats); return its id."""
        items = np.asarray(items, dtype=np.int64)
        user = self._next_user
        self._next_user += 1
        self._injected[user] = items
        for item in items.tolist():
            self._injected_holders[item] = (*self._injected_holders.get(item, ()), user)
        self.degree[items] += 1
        return user

    def remove_user(self, user: int) -> np.ndarray:
        """Remove an injected user; return its profile."""
        if user not in self._injected:
            raise KeyError(f"user {user} is not an injected user")
        items = self._injected.pop(user)
        for item in items.tolist():
            holders = tuple(u for u in self._injected_holders[item] if u != user)
            if holders:
                self._injected_holders[item] = holders
            else:
                del self._injected_holders[item]
        self.degree[items] -= 1
        return items

    # --- items ---------------------------------------------------------------------

    def holders(self, item: int) -> np.ndarray:
        base = self._holder_users[self._holder_indptr[item] : self._holder_indptr[item + 1]]
        extra = self._injected_holders.get(item)
        return base if not extra else np.concatenate([base, np.asarray(extra, dtype=np.int64)])

    def holders_of(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The holders of many items as CSR arrays (indptr, users), each item's holders in
        the order of :meth:`holders`."""
        items = np.asarray(items, dtype=np.int64)
        start = self._holder_indptr[items]
        base = self._holder_indptr[items + 1] - start
        extra = [self._injected_holders.get(item, ()) for item in items.tolist()]
        lengths = base + np.fromiter(map(len, extra), dtype=np.int64, count=len(items))
        indptr = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        users = np.empty(indptr[-1], dtype=np.int64)
        # training holders: one vectorised gather into each item's leading slots
        users[_ranges(indptr[:-1], base)] = self._holder_users[_ranges(start, base)]
        for row in np.flatnonzero(lengths > base).tolist():
            users[indptr[row] + base[row] : indptr[row + 1]] = extra[row]
        return indptr, users

    def pick_items(self, users: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """For each user, the item at position floor(u * profile length) of its profile."""
        picked = np.empty(len(users), dtype=np.int64)
        base = users < self.n_base_users
        start = self._base_indptr[users[base]]
        length = self._base_indptr[users[base] + 1] - start
        picked[base] = self._base_items[start + (uniforms[base] * length).astype(np.int64)]
        injected = np.flatnonzero(~base)
        if len(injected):  # a cold item's walks mostly start at injected holders
            who, inverse = np.unique(users[injected], return_inverse=True)
            indptr, items = self.profiles_of(who)
            length = np.diff(indptr)[inverse]
            offset = (uniforms[injected] * length).astype(np.int64)
            picked[injected] = items[indptr[inverse] + offset]
        return picked

    def user_item_matrix(self) -> sp.csr_matrix:
        """0/1 matrix over every user id handed out (removed users have empty rows)."""
        live = np.array([*range(self.n_base_users), *self._injected], dtype=np.int64)
        live_indptr, items = self.profiles_of(live)  # ids ascending: rows come in order
        lengths = np.zeros(self.n_users, dtype=np.int64)
        lengths[live] = np.diff(live_indptr)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sp.csr_matrix(
            (np.ones(len(items)), items, indptr), shape=(self.n_users, self.n_items)
        )

    def cooccurrence(
        self,
        user_weights: np.ndarray | None = None,
        dtype: type = np.int32,
        dense: bool | None = None,
    ) -> np.ndarray | sp.csr_matrix:
        """(n_items, n_items): entry (i, j) sums, over the users holding both i and j, each
        user's weight (default 1: the co-occurrence count); the diagonal sums each item's
        holders'. A dense array of ``dtype`` where the entries are dense (as at the ml20m
        scale) and CSR where not (the real targets: most users hold one to three items);
        ``dense`` forces the form."""
        right = self.user_item_matrix()
        lengths = np.diff(right.indptr).astype(np.int64)
        # pairs counted with repeats bound the non-zeros: dense when CSR (8 bytes a
        # non-zero) could be larger than the array (4 bytes a cell)
        if dense is None:
            dense = int((lengths**2).sum()) * 2 > self.n_items**2
        if user_weights is None:
            right = left = right.astype(np.int32)
        else:  # weighted products in float64, whatever the stored dtype
            left = sp.diags(np.asarray(user_weights, dtype=np.float64)) @ right
        transposed = left.T.tocsr()
        right = right.tocsc()
        out: np.ndarray | None = np.zeros((self.n_items,) * 2, dtype=dtype) if dense else None
        blocks: list[sp.csr_matrix] = []
        for start in range(0, self.n_items, _COOCCURRENCE_BLOCK):
            stop = min(start + _COOCCURRENCE_BLOCK, self.n_items)
            block = (transposed[start:stop] @ right).tocsr()
            if out is not None:
                out[start:stop] = block.toarray()
            else:
                blocks.append(block.astype(dtype))
        if out is not None:
            return out
        return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, 0), dtype=dtype)


# item rows of a co-occurrence product at once (a block of 1,024 rows of the 26.7k-item
# ml20m catalogue is 110 MB of int32 when dense)
_COOCCURRENCE_BLOCK = 1024


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
