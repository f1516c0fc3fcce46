"""Copy-on-write tables: many live states (one per world) share one frozen base and pay
only for the tables they change.

A :class:`RowOverlay` reads a row from the shared base until its owner writes that row.
Its written rows live in one of two stores: compact (only the written rows, while they
are few) or dense (the whole table, once more than a quarter of its rows are written:
then a read is a plain gather, where patching thousands of scattered rows into every
read cost more than the copy; PinSage's last layer rewrites over half its rows on every
injection). The base is never written (it is made read-only), so forks cannot disturb
each other or the clean model.

A fork copies nothing: it shares its parent's store, and whichever of the two writes to
a shared store first copies it then (copy-on-write per table). So a fork costs the same
in a world of one injection as in a world of a hundred, and a table an injection does
not write is never copied; the copy a write makes is bounded by the table's size, not
by the world's history.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# from this many vectors on, dot_rows multiplies by a dense copy (crossover measured
# between 8 and 50 vectors on MovieTweetings: 1.6 against 2.1 ms, 5.2 against 2.1 ms)
BATCH = 16
# a compact store turns dense once more than 1/DENSE_FRACTION of the rows are written
DENSE_FRACTION = 4


def every_row(rows: np.ndarray, n: int) -> bool:
    """Whether ``rows`` is ``0, 1, ..., n-1`` (n strictly increasing ids below n are):
    then a gather or scatter can be a whole-table copy, twice as fast at 26,744 x 64."""
    return (
        rows.ndim == 1
        and len(rows) == n
        and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1 and bool(np.all(rows[1:] > rows[:-1]))))
    )


@dataclass
class _Compact:
    """The written rows alone: one int per table row, and the rows themselves."""

    slot: np.ndarray  # private position of each row, -1 while it is read from the base
    private: np.ndarray  # the written rows, in the order they were first written
    row_of: np.ndarray  # the row of each private slot
    n: int  # private slots in use

    def copy(self) -> _Compact:
        return _Compact(
            self.slot.copy(), self.private[: self.n].copy(), self.row_of[: self.n].copy(), self.n
        )


@dataclass
class _Dense:
    """The whole table as written, and which rows were."""

    table: np.ndarray
    written: np.ndarray  # bool per row

    def copy(self) -> _Dense:
        return _Dense(self.table.copy(), self.written.copy())


class RowOverlay:
    def __init__(self, base: np.ndarray) -> None:
        base.flags.writeable = False
        self.base = base
        self._store: _Compact | _Dense = _Compact(
            np.full(len(base), -1, dtype=np.int64),
            np.empty((0, *base.shape[1:]), dtype=base.dtype),
            np.empty(0, dtype=np.int64),
            0,
        )
        self._owned = True  # False: the store may be shared with a fork; copy before writing

    def fork(self) -> RowOverlay:
        """An independent overlay on the same base and, until either writes, the same
        store (copied by the first writer)."""
        other = copy.copy(self)
        self._owned = other._owned = False
        return other

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """A copy of ``rows`` (any integer array shape, like numpy fancy indexing)."""
        rows = np.asarray(rows, dtype=np.int64)
        store = self._store
        if isinstance(store, _Dense):
            return store.table.copy() if every_row(rows, len(self.base)) else store.table[rows]
        if store.n and rows.size >= len(self.base):
            # a gather as large as the table (a layer's neighbours of thousands of rows):
            # patching the masked rows costs more than copying the table (3,000 x 50
            # rows of 6,718: 4.2 ms against 14 ms)
            return self.dense()[rows]
        out = self.base[rows]
        if store.n:
            slot = store.slot[rows]
            mine = slot >= 0
            if mine.any():
                out[mine] = store.private[slot[mine]]
        return out

    def __setitem__(self, rows: np.ndarray, values: ArrayLike) -> None:
        """Write ``values`` to ``rows`` (distinct row indices), cast to the table's type
        by the write itself (no converted copy first)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        values = np.broadcast_to(np.asarray(values), (len(rows), *self.base.shape[1:]))
        if not self._owned:
            self._store = self._store.copy()
            self._owned = True
        store = self._store
        if isinstance(store, _Dense):
            if every_row(rows, len(self.base)):  # a slice writes at twice a scatter's speed
                store.table[...], store.written[...] = values, True
            else:
                store.table[rows], store.written[rows] = values, True
            return
        new = rows[store.slot[rows] < 0]
        needed = store.n + len(new)
        if needed * DENSE_FRACTION > len(self.base):
            self._store = dense = _Dense(self.dense(), store.slot >= 0)
            dense.table[rows] = values
            dense.written[rows] = True
            return
        if len(new):
            if needed > len(store.private):
                size = max(needed, 2 * len(store.private), 16)
                grown = np.empty((size, *self.base.shape[1:]), dtype=self.base.dtype)
                grown[: store.n] = store.private[: store.n]
                store.private = grown
                store.row_of = np.resize(store.row_of, size)
            store.slot[new] = np.arange(store.n, needed)
            store.row_of[store.n : needed] = new
            store.n = needed
        store.private[store.slot[rows]] = values

    def add(self, rows: np.ndarray, values: ArrayLike) -> None:
        """Add ``values`` to ``rows`` (distinct row indices) in place: what
        ``table[rows] = table[rows] + values`` gives, without a read's and a write's
        copies once the store is dense (LightGCN's refresh updates every row of its
        tables at ml20m scale, 26,744 x 64 in float64, on every injection)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        store = self._store
        if not isinstance(store, _Dense):  # a compact store: a read and a write
            self[rows] = self[rows] + values
            return
        if not self._owned:
            store = self._store = store.copy()
            self._owned = True
        if every_row(rows, len(self.base)):
            store.table += values
            store.written[...] = True
        else:
            store.table[rows] += values
            store.written[rows] = True

    def whole(self) -> np.ndarray:
        """The whole table as written, read-only: the dense store itself (no copy, and
        valid until the next write) or, for a compact store, a new array."""
        store = self._store
        table = store.table.view() if isinstance(store, _Dense) else self.dense()
        table.flags.writeable = False
        return table

    def column(self, index: int) -> np.ndarray:
        """Column ``index`` of every row (a table of at least two dimensions)."""
        store = self._store
        if isinstance(store, _Dense):
            return store.table[:, index].copy()
        out = self.base[:, index].copy()
        out[store.row_of[: store.n]] = store.private[: store.n, index]
        return out

    def private_rows(self) -> np.ndarray:
        """Rows this owner has written (sorted)."""
        store = self._store
        return np.flatnonzero(store.written if isinstance(store, _Dense) else store.slot >= 0)

    def is_private(self, rows: np.ndarray) -> np.ndarray:
        store = self._store
        return store.written[rows] if isinstance(store, _Dense) else store.slot[rows] >= 0

    def dense(self) -> np.ndarray:
        """The whole table as one new array."""
        store = self._store
        if isinstance(store, _Dense):
            return store.table.copy()
        out = self.base.copy()
        out[store.row_of[: store.n]] = store.private[: store.n]
        return out

    def dot_rows(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors @ table.T`` (scores of every row against each vector). Compact, for a
        few vectors (a top-k): the base product, then the private rows' columns
        overwritten. For a batch (an evaluation): one product with the patched table,
        since writing thousands of scattered columns of a wide result costs more than
        copying the table (500 vectors, 5,331 of 6,718 rows private: 26 ms against 4-8
        ms)."""
        store = self._store
        if isinstance(store, _Dense):
            return vectors @ store.table.T
        n = store.n
        if n and len(vectors) >= BATCH:
            return vectors @ self.dense().T
        out = vectors @ self.base.T
        if n:
            out[:, store.row_of[:n]] = vectors @ store.private[:n].T
        return out


class SetOverlay:
    """Per-item sets over a shared base list; a write replaces the item's set privately.
    Forks share the private sets until either writes (then it copies the mapping)."""

    def __init__(self, base: list[frozenset[int]]) -> None:
        self.base = base
        self._private: dict[int, frozenset[int]] = {}
        self._owned = True

    def fork(self) -> SetOverlay:
        other = copy.copy(self)
        self._owned = other._owned = False
        return other

    def __getitem__(self, item: int) -> frozenset[int]:
        return self._private.get(item, self.base[item])

    def __setitem__(self, item: int, members: Iterable[int]) -> None:
        if not self._owned:
            self._private = dict(self._private)
            self._owned = True
        self._private[item] = frozenset(members)
