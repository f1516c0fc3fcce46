"""Importance-based neighbourhoods from item -> user -> item random walks with restart.

As in PinSage (Ying et al. 2018) and DGL's example: from each item, ``n_walks`` walks;
each hop goes to a random user holding the current item, then to a random item of that
user; after a hop a walk stops with probability ``restart``, and after ``max_hops`` hops
it stops anyway. The ``n_neighbours`` most visited items (the item itself excluded,
ties by item id) are its neighbours, their visit counts the weights.

Every random choice is a hash of (seed, start item, walk, hop, ...), never a shared
random stream, so the walks of an item depend only on the holder lists and profiles they
read, and the same graph always gives the same neighbourhoods. The first hop is a
bottom-k sample: each holder of the start item gets a hash priority and the ``n_walks``
lowest-priority holders start the walks (cycled when there are fewer holders). One more
holder therefore changes a popular item's walks only when its priority falls below the
current cut-off (probability ``n_walks / (holders + 1)``): an injection leaves the
neighbourhoods of the popular items in its profile as they were, which is what keeps
the incremental refresh local.

The walks of a batch of items advance together, one numpy pass per hop over every
walker, so the hundreds of neighbourhoods an injection redoes cost milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_server.graph import InteractionGraph
from shared.options import option


@dataclass(frozen=True)
class WalkConfig:
    n_walks: int = option(128, "random walks per item", flag="--walks")
    max_hops: int = option(1, "item-to-item hops per walk", flag="--hops")
    restart: float = 0.5
    n_neighbours: int = option(20, "neighbours per item (the most visited)", flag="--neighbours")
    seed: int = 0  # `recsys-server train` sets TrainConfig's


@dataclass
class Neighbourhoods:
    """Fixed-size neighbour lists of some items; unused slots hold item 0 with weight 0."""

    index: np.ndarray  # (n_items, T) int64
    weight: np.ndarray  # (n_items, T) float32 visit counts
    # items each item's walks went on from (hop > 1 starts); empty when max_hops == 1
    through: list[frozenset[int]]
    # the highest priority among the holders that start an item's walks; a new holder
    # above it changes nothing. 0 when every holder starts a walk (any change counts).
    cutoff: np.ndarray  # (n_items,) uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_of(*parts: np.ndarray | int) -> np.ndarray:
    """64-bit hash of a tuple of integers (arrays broadcast)."""
    with np.errstate(over="ignore"):
        h: np.uint64 | np.ndarray = np.uint64(0x9E3779B97F4A7C15)
        for part in parts:
            h = _mix((h * np.uint64(31)) ^ np.asarray(part).astype(np.uint64))
    return np.atleast_1d(h)


def unit_of(h: np.ndarray) -> np.ndarray:
    """Hash -> float in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holder_priority(
    config: WalkConfig, item: int | np.ndarray, users: int | np.ndarray
) -> np.ndarray:
    """The bottom-k priority of ``users`` as holders of ``item``: the lowest start walks."""
    return hash_of(config.seed, item, users, 0)


def _segment_rank(segment: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal (sorted) segment ids."""
    first = np.ones(len(segment), dtype=bool)
    first[1:] = segment[1:] != segment[:-1]
    starts = np.flatnonzero(first)
    return np.arange(len(segment)) - np.repeat(starts, np.diff(np.append(starts, len(segment))))


def _walk_batch(graph: InteractionGraph, items: np.ndarray, config: WalkConfig) -> Neighbourhoods:
    """The neighbourhoods of ``items``, every walk of every item advanced together: one
    row per item; walker ``w`` belongs to the item in row ``owner[w]``."""
    n_walks, n_items = config.n_walks, graph.n_items
    out = Neighbourhoods(
        index=np.zeros((len(items), config.n_neighbours), dtype=np.int64),
        weight=np.zeros((len(items), config.n_neighbours), dtype=np.float32),
        through=[frozenset()] * len(items),
        cutoff=np.zeros(len(items), dtype=np.uint64),
    )
    indptr, holders = graph.holders_of(items)
    degree = np.diff(indptr)
    # each item's holders sorted by priority: the lowest ``n_walks`` start its walks
    row_of_holder = np.repeat(np.arange(len(items)), degree)
    priority = holder_priority(config, items[row_of_holder], holders)
    order = np.lexsort((priority, row_of_holder))
    holders, priority = holders[order], priority[order]
    popular = np.flatnonzero(degree > n_walks)
    out.cutoff[popular] = priority[indptr[popular] + n_walks - 1]
    # walk w of an item is named by its first holder and how often the holders were cycled
    rows = np.flatnonzero(degree > 0)
    owner = np.repeat(rows, n_walks)
    walk = np.tile(np.arange(n_walks), len(rows))
    starters = np.minimum(degree, n_walks)[owner]
    first, cycle = holders[indptr[owner] + walk % starters], walk // starters
    start_item = items[owner]
    current = graph.pick_items(first, unit_of(hash_of(config.seed, start_item, first, cycle, 1)))
    visits, visit_owner = [current], [owner]
    through_owner, through_item = [], []
    alive = unit_of(hash_of(config.seed, start_item, first, cycle, 2)) >= config.restart
    for hop in range(1, config.max_hops):
        walkers = np.flatnonzero(alive)
        if len(walkers) == 0:
            break
        through_owner.append(owner[walkers])
        through_item.append(current[walkers])
        name = (config.seed, start_item[walkers], first[walkers], cycle[walkers])
        pick_user = unit_of(hash_of(*name, 3 * hop + 3))
        pick_item = unit_of(hash_of(*name, 3 * hop + 4))
        stop = unit_of(hash_of(*name, 3 * hop + 5))
        # a random holder of the item each walker stands on, then a random item of theirs
        at, inverse = np.unique(current[walkers], return_inverse=True)
        at_indptr, at_holders = graph.holders_of(at)
        at_degree = np.diff(at_indptr)[inverse]
        users = at_holders[at_indptr[inverse] + (pick_user * at_degree).astype(np.int64)]
        current = current.copy()  # the earlier hops' visits keep their array
        current[walkers] = graph.pick_items(users, pick_item)
        visits.append(current[walkers])
        visit_owner.append(owner[walkers])
        alive[walkers] = stop >= config.restart
    if through_owner:
        pairs = np.unique(np.concatenate(through_owner) * n_items + np.concatenate(through_item))
        through: list[set[int]] = [set() for _ in items]
        for row, item in zip((pairs // n_items).tolist(), (pairs % n_items).tolist(), strict=True):
            through[row].add(item)
        out.through = [frozenset(t) for t in through]
    # the most visited items (the start item excluded, ties by item id) and their counts
    visited, visitor = np.concatenate(visits), np.concatenate(visit_owner)
    keep = visited != items[visitor]
    keys, counts = np.unique(visitor[keep] * n_items + visited[keep], return_counts=True)
    row, neighbour = keys // n_items, keys % n_items
    order = np.lexsort((neighbour, -counts, row))
    row, neighbour, counts = row[order], neighbour[order], counts[order]
    slot = _segment_rank(row)
    top = slot < config.n_neighbours
    out.index[row[top], slot[top]] = neighbour[top]
    out.weight[row[top], slot[top]] = counts[top]
    return out


def neighbourhoods_of(
    graph: InteractionGraph, config: WalkConfig, items: np.ndarray, chunk: int = 1024
) -> Neighbourhoods:
    """The neighbourhoods of ``items``, one row per item in the given order (computed
    ``chunk`` items at a time, which bounds the memory of the walkers)."""
    items = np.asarray(items, dtype=np.int64)
    starts = range(0, max(len(items), 1), chunk)  # an empty request still gets its arrays
    parts = [_walk_batch(graph, items[i : i + chunk], config) for i in starts]
    return Neighbourhoods(
        index=np.concatenate([p.index for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        through=[t for p in parts for t in p.through],
        cutoff=np.concatenate([p.cutoff for p in parts]),
    )
