"""Item-kNN as a victim: item-to-item collaborative filtering ("people who liked X also
liked Y"), served with an exact incremental update of the counts and neighbour lists.

The similarity of items i and j is the cosine of their holder vectors, with a shrinkage
term: ``c(i, j) / (sqrt(d(i) d(j)) + shrink)``, where ``c`` counts the users holding both
and ``d`` the users holding each. Every item keeps its ``N`` most similar items (ties by
the lower item id; only positive similarities); a user's score for an item is the sum
of its similarities over the user's items whose lists contain it, as item-to-item CF
serves it, plus a popularity tie-break far below any similarity (so a user whose lists
say nothing, such as one with no items, gets the most popular items, as a served
item-to-item CF would backfill). ``N`` and the shrinkage are chosen on validation HR@10
from a stated grid.

An injected user changes ``c`` on the pairs of its items and ``d`` of its items only. So
the rows of its own items change as a whole (recomputed from their count rows), and any
other row changes only in its entries for those items: lower after an injection (their
``d`` grew), higher after a removal. Each row keeps its list (the best ``N``, with their
similarities), a *reserve* of up to ``N`` more item ids (no similarities: they would go
stale whenever one of their ``d`` moved) that rank below the list, and a floor, a
(similarity, id) key that no item outside list and reserve beats. After an injection, a
row is touched only if its list holds an injected item: the item's similarity is
lowered in place and the list re-sorted, unless it fell below the list's old last entry,
where a reserve item may now pass it; then the row is rebuilt from the exact
similarities of its list, reserve and the injected items (read from the counts), and
recomputed from its count row only if fewer than ``N`` of them stay above the floor. A
removal raises the injected items' similarities: a row is re-sorted if its list holds
one, and rebuilt as above if one enters the list or passes the floor from outside. The
neighbour lists are then the same as a full build on the same graph (the property tests
check it).

Every table is copy-on-write (:class:`~recsys_server.pinsage.overlay.RowOverlay`, and
:class:`CountTable` for the counts), so :meth:`NeighbourState.fork` is cheap and a world
holds only the rows its own injections changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from recsys_server.cancellation import check_cancelled
from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.overlay import RowOverlay
from recsys_server.training import History, TrainConfig, progress_bar
from recsys_server.victims.base import ServingState, Victim

# rows of the similarity matrix computed at once in a full build (a block of 256 rows of
# the 26.7k-item ml20m catalogue is 55 MB of float64)
_BLOCK = 256
# a similarity is at least 1 / (n_users + shrink): 7e-6 for ml20m's 138k users, over
# 1e-3 on the real targets
POPULARITY_TIE_BREAK = 1e-6
# the floor of a row whose reserve holds every item of positive similarity
_NO_FLOOR = (0.0, -1)


@dataclass(frozen=True)
class ItemKNNConfig:
    """``None``: chosen on validation HR@10 from the grid (``*_choices``, else the
    class's default grid)."""

    neighbours: int | None = None
    shrink: float | None = None
    # a grid other than the default: a trained model's own, which its scheduled
    # retrains re-tune over
    neighbour_choices: tuple[int, ...] | None = None
    shrink_choices: tuple[float, ...] | None = None
    # 20-200 neighbours is the usual range of item-to-item CF, and 5 and 10 because the
    # best of a first grid (20-200 x 0, 10) on MovieTweetings' validation split was its
    # corner (N 20, shrink 10); shrinkage 0 is the plain cosine, 10 and 50 damp pairs
    # that co-occur in very few users (most users here hold 1-3 items, so one shared
    # user can make a pair look maximally similar)
    NEIGHBOUR_GRID: ClassVar[tuple[int, ...]] = (5, 10, 20, 50, 100, 200)
    SHRINK_GRID: ClassVar[tuple[float, ...]] = (0.0, 10.0, 50.0)

    def __post_init__(self) -> None:
        if self.neighbours is not None and self.neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {self.neighbours}")
        if self.shrink is not None and self.shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink}")

    def neighbour_grid(self) -> tuple[int, ...]:
        if self.neighbours is not None:
            return (self.neighbours,)
        return self.neighbour_choices or self.NEIGHBOUR_GRID

    def shrink_grid(self) -> tuple[float, ...]:
        if self.shrink is not None:
            return (self.shrink,)
        return self.shrink_choices or self.SHRINK_GRID

    def grid(self) -> list[tuple[int, float]]:
        return [(n, s) for s in self.shrink_grid() for n in self.neighbour_grid()]

    def to_dict(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "shrink": self.shrink}


# --- counts ----------------------------------------------------------------------------


class CountTable:
    """Co-occurrence counts ``c(i, j)`` (zero diagonal), copy-on-write by row.

    The base is a CSR matrix where the counts are sparse (the real targets: most users
    hold one to three items) and a dense int32 array where they are not (the ml20m
    preset); a private row is a dense array, replaced whole on every write, so forks may
    share them."""

    def __init__(self, base: sp.csr_matrix | np.ndarray) -> None:
        if isinstance(base, np.ndarray):
            base.flags.writeable = False
        self.base = base
        self.n_items = base.shape[0]
        self._private: dict[int, np.ndarray] = {}

    @classmethod
    def of(cls, graph: InteractionGraph, dense: bool | None = None) -> CountTable:
        """``dense``: the base's form (default: the smaller one)."""
        counts = graph.cooccurrence(dense=dense)
        # the diagonal (each item's holders) is the degree, kept by the graph
        if isinstance(counts, np.ndarray):
            np.fill_diagonal(counts, 0)
            return cls(counts)
        counts = (counts - sp.diags(counts.diagonal(), dtype=np.int32)).tocsr()
        counts.eliminate_zeros()
        return cls(counts.astype(np.int32))

    def fork(self) -> CountTable:
        other = copy.copy(self)
        other._private = dict(self._private)
        return other

    def rows(self, items: np.ndarray) -> np.ndarray:
        """(len(items), n_items) dense count rows."""
        items = np.asarray(items, dtype=np.int64)
        dense = isinstance(self.base, np.ndarray)
        out = self.base[items] if dense else self.base[items].toarray()
        for position, item in enumerate(items.tolist()):
            if item in self._private:
                out[position] = self._private[item]
        return out

    def entries(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``c(rows[r], columns[r, m])``, shaped as ``columns`` (a column -1 reads 0)."""
        safe = np.maximum(columns, 0)
        if isinstance(self.base, np.ndarray):
            out = self.base[rows[:, None], safe]
            for position, item in enumerate(rows.tolist()):
                if item in self._private:
                    out[position] = self._private[item][safe[position]]
        else:  # few rows (a rebuild), of a catalogue small enough to read them whole
            out = np.take_along_axis(self.rows(rows), safe, axis=1)
        return np.where(columns >= 0, out, 0)

    def shift(self, items: np.ndarray, sign: int) -> np.ndarray:
        """Count one more (``sign`` 1) or one fewer (-1) user holding all of ``items``;
        return their new rows."""
        rows = self.rows(items)
        rows[:, items] += sign
        rows[np.arange(len(items)), items] = 0
        for item, row in zip(items.tolist(), rows, strict=True):
            self._private[item] = row
        return rows


def similarity(counts: np.ndarray, degree_a: np.ndarray, degree_b: np.ndarray, shrink: float):
    """Cosine with shrinkage, elementwise (broadcasting); 0 where nothing co-occurs. The
    one formula of every path, so that equal inputs give bit-equal similarities."""
    counts = counts.astype(np.float64)
    denominator = np.sqrt(degree_a * degree_b) + shrink
    return np.divide(counts, denominator, out=np.zeros_like(counts), where=counts > 0)


def _above(values: np.ndarray, ids: np.ndarray, floor_value, floor_id) -> np.ndarray:
    """Whether each (similarity, id) key ranks above the floor: higher similarity first,
    then the lower id. Zero similarities never do."""
    return (values > 0) & ((values > floor_value) | ((values == floor_value) & (ids < floor_id)))


def best_of_rows(values: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """Each row's ``width`` best items (similarity descending, then id ascending), padded
    with id -1 and similarity 0, and its floor: the key of the next best item, or
    ``_NO_FLOOR`` when every item of positive similarity is in. ``values`` must hold 0 on
    each row's own item."""
    return _reserve_and_floor(*rank_rows(values, width), width)


def rank_rows(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``width + 1`` best (ids, similarities), best first (fewer columns only
    when the catalogue has fewer items). Any prefix of it is the ranking of a smaller
    width: the order is total, so the lists of every ``N`` can be cut from one ranking."""
    n = values.shape[1]
    taken = min(width + 1, n)
    # the taken best of each row, in linear time; a partition takes arbitrary ones among
    # items tied at the cut, so rows with a positive tie across the cut take the lowest
    # ids instead (zero similarities are never kept, whichever are taken)
    ids = np.argpartition(-values, taken - 1, axis=1)[:, :taken]
    picked = np.take_along_axis(values, ids, axis=1)
    threshold = picked.min(axis=1)
    at_cut = values == threshold[:, None]
    straddles = (threshold > 0) & (at_cut.sum(axis=1) > (picked == threshold[:, None]).sum(axis=1))
    for row in np.flatnonzero(straddles).tolist():
        above = np.flatnonzero(values[row] > threshold[row])
        tied = np.flatnonzero(at_cut[row])[: taken - len(above)]
        ids[row] = np.concatenate([above, tied])
        picked[row] = values[row, ids[row]]
    order = np.lexsort((ids, -picked), axis=1)
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(picked, order, axis=1)


def _reserve_and_floor(ids: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, ...]:
    """From each row's best items, best first (at least ``width + 1`` columns where the
    row has that many items): the padded reserve and the floor."""
    n_rows = len(ids)
    floor_value = np.full(n_rows, _NO_FLOOR[0])
    floor_id = np.full(n_rows, _NO_FLOOR[1], dtype=np.int64)
    if ids.shape[1] > width:
        has_floor = values[:, width] > 0
        floor_value[has_floor] = values[has_floor, width]
        floor_id[has_floor] = ids[has_floor, width]
    return (*_pad(ids[:, :width], values[:, :width], width), floor_value, floor_id)


def rank_sparse(
    counts: sp.csr_matrix, degree: np.ndarray, shrink: float, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_rows` of every row at once, from sparse counts (zero diagonal): one
    sort of the non-zeros by (row, similarity descending, id), the same keys as the
    dense path (the same :func:`similarity` of the same numbers). Always ``width + 1``
    columns, padded with id -1 and similarity 0 (which :func:`_reserve_and_floor` reads
    as no item)."""
    n = counts.shape[0]
    rows = np.repeat(np.arange(n), np.diff(counts.indptr))
    columns = counts.indices.astype(np.int64)
    values = similarity(counts.data, degree[rows], degree[columns], shrink)
    order = np.lexsort((columns, -values, rows))
    rank = np.arange(len(order)) - counts.indptr[rows[order]]
    kept = rank <= width
    ids = np.full((n, width + 1), -1, dtype=np.int64)
    best = np.zeros((n, width + 1))
    ids[rows[order][kept], rank[kept]] = columns[order][kept]
    best[rows[order][kept], rank[kept]] = values[order][kept]
    return ids, best


def rank_all(
    counts: CountTable, degree: np.ndarray, shrink: float, width: int, *, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_rows` of every item's row of a fresh count table (no private rows)."""
    degree = degree.astype(np.float64)
    if isinstance(counts.base, sp.csr_matrix):
        return rank_sparse(counts.base, degree, shrink, width)
    n = counts.n_items
    blocks = []
    with progress_bar(n, "item-kNN", "item", enabled=progress) as bar:
        for start in range(0, n, _BLOCK):
            rows = np.arange(start, min(start + _BLOCK, n))
            blocks.append(rank_rows(similarity_rows(counts, degree, rows, shrink), width))
            bar.update(len(rows))
    return np.concatenate([ids for ids, _ in blocks]), np.concatenate([v for _, v in blocks])


def similarity_rows(
    counts: CountTable, degree: np.ndarray, rows: np.ndarray, shrink: float
) -> np.ndarray:
    """(len(rows), n_items) similarities of items ``rows`` to every item, 0 on their own."""
    values = similarity(counts.rows(rows), degree[rows, None], degree[None, :], shrink)
    values[np.arange(len(rows)), rows] = 0.0
    return values


def _pad(ids: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``width`` columns; non-positive entries become id -1, similarity 0."""
    out_ids = np.full((len(ids), width), -1, dtype=np.int64)
    out_values = np.zeros((len(ids), width))
    columns = min(width, ids.shape[1])
    keep = values[:, :columns] > 0
    out_ids[:, :columns] = np.where(keep, ids[:, :columns], -1)
    out_values[:, :columns] = np.where(keep, values[:, :columns], 0.0)
    return out_ids, out_values


# --- the serving state -----------------------------------------------------------------


class NeighbourState(ServingState):
    def __init__(
        self,
        graph: InteractionGraph,
        neighbours: int,
        shrink: float,
        *,
        dense_counts: bool | None = None,
        progress: bool = False,
        retrain_config: ItemKNNConfig | None = None,
        counts: CountTable | None = None,
        ranked: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``counts``: the graph's fresh count table, shared (this state forks it; then
        ``dense_counts`` is not read); ``ranked``: :func:`rank_all` of it at this
        shrinkage and a width of at least ``2 * neighbours``, from which the lists are
        cut (a grid's points share both)."""
        self.graph = graph
        self.neighbours = neighbours
        self.shrink = shrink
        # the grid a scheduled retrain re-tunes over: the trained model's own
        self.retrain_config = retrain_config or ItemKNNConfig()
        # the list and the reserve: twice the list, so that an injection rarely empties a
        # row's candidates below N (which costs a recompute of that row)
        self.width = 2 * neighbours
        self.counts = CountTable.of(graph, dense_counts) if counts is None else counts.fork()
        if ranked is None:
            ranked = rank_all(self.counts, graph.degree, shrink, self.width, progress=progress)
        elif ranked[0].shape[1] < min(self.width + 1, graph.n_items):
            # a narrower ranking would cut the reserve and the floor short, silently
            raise ValueError(
                f"a ranking of {ranked[0].shape[1]} columns is too narrow for "
                f"{neighbours} neighbours (needs {self.width + 1})"
            )
        ids, values = (part[:, : self.width + 1] for part in ranked)
        index, value, floor_value, floor_id = _reserve_and_floor(ids, values, self.width)
        self.list_index = RowOverlay(np.ascontiguousarray(index[:, :neighbours]))
        self.list_value = RowOverlay(np.ascontiguousarray(value[:, :neighbours]))
        self.reserve = RowOverlay(np.ascontiguousarray(index[:, neighbours:]))
        self.floor_value, self.floor_id = RowOverlay(floor_value), RowOverlay(floor_id)
        # what the last add or remove did: rows re-sorted in place, rows rebuilt from
        # their candidates, rows recomputed from their counts (the profile's own, and
        # rows whose candidates ran short)
        self.last_update: dict[str, int] = {}

    def fork(self) -> NeighbourState:
        other = copy.copy(self)
        other.graph = self.graph.fork()
        other.counts = self.counts.fork()
        for name in ("list_index", "list_value", "reserve", "floor_value", "floor_id"):
            setattr(other, name, getattr(self, name).fork())
        return other

    def retrained(self, data: TargetData, epochs: int) -> NeighbourState:
        """Item-kNN learns nothing by epochs: its counts already follow every injection.
        A scheduled retrain re-tunes ``N`` and the shrinkage on validation over the
        polluted graph, over the grid the model was trained with (``epochs`` is not
        used)."""
        return tune(data, self.graph.fork(), self.retrain_config, progress=False)[0]

    def similarities(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The similarity of item ``rows[r]`` to each item ``columns[r, m]`` (0 for -1)."""
        degree = self.graph.degree.astype(np.float64)
        counts = self.counts.entries(rows, columns)
        return similarity(counts, degree[rows, None], degree[np.maximum(columns, 0)], self.shrink)

    def _recompute_rows(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        degree = self.graph.degree.astype(np.float64)
        return best_of_rows(similarity_rows(self.counts, degree, rows, self.shrink), self.width)

    def _write_rows(self, rows: np.ndarray, block: tuple[np.ndarray, ...]) -> None:
        """``block``: each row's best ``2N`` (ids, similarities) and floor."""
        index, value, floor_value, floor_id = block
        n = self.neighbours
        self.list_index[rows], self.list_value[rows] = index[:, :n], value[:, :n]
        self.reserve[rows] = index[:, n:]
        self.floor_value[rows], self.floor_id[rows] = floor_value, floor_id

    # --- incremental ---------------------------------------------------------------

    def add_user(self, items: np.ndarray) -> int:
        items = np.asarray(items, dtype=np.int64)
        user = self.graph.add_user(items)
        self._update(items, 1)
        return user

    def remove_user(self, user: int) -> None:
        self._update(self.graph.remove_user(user), -1)

    def _update(self, items: np.ndarray, sign: int) -> None:
        """The graph has one more (``sign`` 1) or one fewer (-1) user holding ``items``."""
        if len(items) == 0:
            return
        items = np.unique(items)
        rows_of_items = self.counts.shift(items, sign)  # row j: c(j, k) for every k
        self._write_rows(items, self._recompute_rows(items))
        degree = self.graph.degree.astype(np.float64)
        # column k of these: item k's similarity to each injected item, before and after,
        # for k outside the profile (there c(j, k) did not change; d(j) did)
        outside = rows_of_items.copy()
        outside[:, items] = 0
        new = similarity(outside, degree[items, None], degree[None, :], self.shrink)
        old = similarity(outside, degree[items, None] - sign, degree[None, :], self.shrink)
        ids = np.broadcast_to(items[:, None], new.shape)
        last_value = self.list_value.column(self.neighbours - 1)
        last_id = self.list_index.column(self.neighbours - 1)
        listed = _above(old, ids, last_value, last_id) | (ids == last_id)
        if sign > 0:  # a listed item fell below the old last entry: a reserve item may pass it
            rebuilt = (listed & ~_above(new, ids, last_value, last_id)).any(axis=0)
        else:  # an item enters the list, or passes the floor from outside
            floor_value, floor_id = self.floor_value.dense(), self.floor_id.dense()
            enters = ~listed & _above(new, ids, last_value, last_id)
            passes = ~_above(old, ids, floor_value, floor_id) & _above(
                new, ids, floor_value, floor_id
            )
            rebuilt = (enters | passes).any(axis=0)
        rebuilt[items] = False  # recomputed above
        resorted = listed.any(axis=0) & ~rebuilt
        resorted[items] = False
        self.last_update = {"items": len(items), "rows_recomputed": len(items)}
        self._resort(np.flatnonzero(resorted), items, new)
        self._rebuild(np.flatnonzero(rebuilt), items)

    def _resort(self, rows: np.ndarray, items: np.ndarray, new: np.ndarray) -> None:
        """Rows whose list keeps its items: the injected items' new similarities
        (``new[j, row]``) in place, the lists re-sorted where that broke their order."""
        index, value = self.list_index[rows], self.list_value[rows]
        position = np.minimum(np.searchsorted(items, index), len(items) - 1)
        injected = items[position] == index
        value[injected] = new[
            position[injected], np.broadcast_to(rows[:, None], index.shape)[injected]
        ]
        ahead_value, ahead_index = value[:, :-1], index[:, :-1]
        ordered = (
            (ahead_value > value[:, 1:])
            | ((ahead_value == value[:, 1:]) & (ahead_index < index[:, 1:]))
            | (index[:, 1:] < 0)
        ).all(axis=1)
        unordered = np.flatnonzero(~ordered)
        if len(unordered):
            order = np.lexsort((index[unordered], -value[unordered]), axis=1)
            index[unordered] = np.take_along_axis(index[unordered], order, axis=1)
            value[unordered] = np.take_along_axis(value[unordered], order, axis=1)
        self.list_index[rows], self.list_value[rows] = index, value
        self.last_update["rows_resorted"] = len(rows)

    def _rebuild(self, rows: np.ndarray, items: np.ndarray) -> None:
        """Rows whose list may take new items: from the exact similarities of their
        list, reserve and the injected items, those above the floor, best first; a row
        left with fewer than N of them (and items below its floor) is recomputed."""
        self.last_update["rows_rebuilt"] = len(rows)
        if len(rows) == 0:
            return
        candidates = np.concatenate(
            [
                self.list_index[rows],
                self.reserve[rows],
                np.broadcast_to(items, (len(rows), len(items))),
            ],
            axis=1,
        )
        candidates = np.sort(candidates, axis=1)
        candidates[:, 1:][candidates[:, 1:] == candidates[:, :-1]] = -1  # each item once
        values = self.similarities(rows, candidates)
        floor_value, floor_id = self.floor_value[rows], self.floor_id[rows]
        keep = (candidates >= 0) & _above(
            values, candidates, floor_value[:, None], floor_id[:, None]
        )
        order = np.lexsort((candidates, -np.where(keep, values, -np.inf)), axis=1)
        candidates = np.take_along_axis(np.where(keep, candidates, -1), order, axis=1)
        values = np.take_along_axis(np.where(keep, values, 0.0), order, axis=1)
        kept = keep.sum(axis=1)
        short = (kept < self.neighbours) & (floor_value > 0)
        # more candidates above the floor than list and reserve hold: the first left out
        # is the new floor
        over = kept > self.width
        if candidates.shape[1] > self.width:
            floor_value = np.where(over, values[:, self.width], floor_value)
            floor_id = np.where(over, candidates[:, self.width], floor_id)
        index, value = _pad(candidates, values, self.width)
        merged = ~short
        block = (index[merged], value[merged], floor_value[merged], floor_id[merged])
        self._write_rows(rows[merged], block)
        if short.any():
            self._write_rows(rows[short], self._recompute_rows(rows[short]))
            self.last_update["rows_rebuilt"] -= int(short.sum())
            self.last_update["rows_recomputed"] += int(short.sum())

    # --- reading -------------------------------------------------------------------

    def neighbour_lists(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(len(items), N) neighbour ids (-1: none) and similarities, best first."""
        return self.list_index[items], self.list_value[items]

    def scores(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        keys, weights = self._list_entries(users)
        n = self.graph.n_items
        summed = np.bincount(keys, weights=weights, minlength=len(users) * n)
        # float even when no user holds an item (bincount then counts integers)
        scores = summed.astype(np.float64, copy=False).reshape(len(users), n)
        return scores + self.popularity_tie_break()

    def scores_of(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The scores of each user's own ``items[r]`` from the users' list entries that
        land on one of them, without the (users, catalogue) matrix: the sampled
        evaluation takes a third of its time on MovieTweetings, 0.7 of it on the
        ``paper`` preset (``benchmarks/evaluation_speed.py``). Bit-equal to
        :meth:`scores`: each sum adds the same entries in the same order, so a rank never
        depends on which path scored it."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        keys, weights = self._list_entries(users)
        wanted = np.arange(len(users))[:, None] * self.graph.n_items + items
        is_wanted = np.zeros(len(users) * self.graph.n_items, dtype=bool)
        is_wanted[wanted.ravel()] = True
        kept = is_wanted[keys]
        keys, weights = keys[kept], weights[kept]
        tie_break = self.popularity_tie_break()[items]
        if len(keys) == 0:
            return np.zeros(items.shape) + tie_break
        present, position = np.unique(keys, return_inverse=True)
        summed = np.bincount(position, weights=weights, minlength=len(present))
        at = np.minimum(np.searchsorted(present, wanted), len(present) - 1)
        return np.where(present[at] == wanted, summed[at], 0.0) + tie_break

    def _list_entries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of the users' items' neighbour lists, as ``row * n_items + item``
        (``row``: the user's position in ``users``) and its similarity, in list order."""
        indptr, items = self.graph.profiles_of(users)
        index, value = self.neighbour_lists(items)
        owner = np.repeat(np.arange(len(users)), np.diff(indptr))[:, None]
        used = index >= 0
        return (owner * self.graph.n_items + index)[used], value[used]

    def popularity_tie_break(self) -> np.ndarray:
        """Per item, at most ``POPULARITY_TIE_BREAK``: the share of the training users
        holding it now (injected holders count). Below almost any similarity, it orders
        what the lists leave level, as item-to-item CF backfills with bestsellers: the
        items outside a user's lists, and everything for a user with an empty profile."""
        return POPULARITY_TIE_BREAK * self.graph.degree / max(self.graph.n_base_users, 1)


def tune(
    data: TargetData, graph: InteractionGraph, config: ItemKNNConfig, *, progress: bool
) -> tuple[NeighbourState, History, dict[str, float]]:
    """The state of the grid point with the best validation HR@10 (the first on ties),
    a History with one entry per grid point, and every point's validation HR@10."""
    grid = config.grid()
    history = History()
    validation: dict[str, float] = {}
    best: NeighbourState | None = None
    counts = CountTable.of(graph)
    # one ranking per shrinkage (the grid runs shrinkage by shrinkage), at the grid's
    # widest lists: each N's lists are its prefix
    widest = 2 * max(config.neighbour_grid())
    ranked_shrink, ranked = None, None
    with progress_bar(len(grid), "item-kNN", "grid point", enabled=progress) as bar:
        for neighbours, shrink in grid:
            check_cancelled()
            if shrink != ranked_shrink:
                ranked = rank_all(counts, graph.degree, shrink, widest, progress=False)
                ranked_shrink = shrink
            state = NeighbourState(
                graph, neighbours, shrink, retrain_config=config, counts=counts, ranked=ranked
            )
            score = data.validation_hr10(state.scores)
            validation[f"N {neighbours}, shrink {shrink:g}"] = score
            history.validation_hr10.append(score)
            history.loss.append(float("nan"))  # nothing is minimised
            if best is None or score > history.best:
                history.best_epoch = len(history.validation_hr10) - 1
                best = state
            bar.set_postfix_str(
                f"N {neighbours}, shrink {shrink:g}: val HR@10 {score:.4f}", refresh=False
            )
            bar.update()
    assert best is not None
    return best, history, validation


@dataclass
class ItemKNNVictim(Victim):
    neighbours: int
    shrink: float
    # the clean model's neighbour lists: what the fingerprint hashes (serving rebuilds
    # them from the graph, deterministically)
    index: np.ndarray
    value: np.ndarray
    validation: dict[str, float] = field(default_factory=dict)
    # the grid N and the shrinkage were chosen from; None for an artifact written before
    # the grid was stored (format 3 without these fields), which did not record it
    neighbour_grid: tuple[int, ...] | None = None
    shrink_grid: tuple[float, ...] | None = None
    name: ClassVar[str] = "itemknn"
    label: ClassVar[str] = "ItemKNN"

    @classmethod
    def default_config(cls) -> ItemKNNConfig:
        return ItemKNNConfig()

    @classmethod
    def train(
        cls, data: TargetData, config: ItemKNNConfig, train: TrainConfig
    ) -> tuple[ItemKNNVictim, History]:
        graph = InteractionGraph(data.train, data.n_users, data.n_items)
        state, history, validation = tune(data, graph, config, progress=train.progress)
        index, value = state.neighbour_lists(np.arange(graph.n_items))
        grids = config.neighbour_grid(), config.shrink_grid()
        return cls(state.neighbours, state.shrink, index, value, validation, *grids), history

    def serving_state(
        self, data: TargetData, graph: InteractionGraph | None = None
    ) -> NeighbourState:
        graph = graph or InteractionGraph(data.train, data.n_users, data.n_items)
        # an artifact from before the grid was stored re-tunes over the default grid
        grid = ItemKNNConfig(neighbour_choices=self.neighbour_grid, shrink_choices=self.shrink_grid)
        return NeighbourState(graph, self.neighbours, self.shrink, retrain_config=grid)

    def config_dict(self) -> dict[str, Any]:
        return {
            "neighbours": self.neighbours,
            "shrink": self.shrink,
            "neighbour_grid": _listed(self.neighbour_grid),
            "shrink_grid": _listed(self.shrink_grid),
            "validation_hr10": self.validation,
        }

    def to_payload(self) -> dict[str, Any]:
        return {
            "neighbours": self.neighbours,
            "shrink": self.shrink,
            "validation": self.validation,
            "neighbour_grid": _listed(self.neighbour_grid),
            "shrink_grid": _listed(self.shrink_grid),
            **self.tensors(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        grids = (payload.get("neighbour_grid"), payload.get("shrink_grid"))
        return cls(
            payload["neighbours"],
            payload["shrink"],
            payload["index"].numpy(),
            payload["value"].numpy(),
            dict(payload["validation"]),
            *(None if grid is None else tuple(grid) for grid in grids),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"index": torch.from_numpy(self.index), "value": torch.from_numpy(self.value)}


def _listed(grid: tuple[Any, ...] | None) -> list[Any] | None:
    return None if grid is None else list(grid)
