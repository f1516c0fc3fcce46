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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_server.pinsage.graph import InteractionGraph


@dataclass(frozen=True)
class WalkConfig:
    n_walks: int = 128
    max_hops: int = 1
    restart: float = 0.5
    n_neighbours: int = 20
    seed: int = 0


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
        h = np.uint64(0x9E3779B97F4A7C15)
        for part in parts:
            h = _mix((h * np.uint64(31)) ^ np.asarray(part).astype(np.uint64))
    return np.atleast_1d(h)


def _unit(h: np.ndarray) -> np.ndarray:
    """Hash -> float in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holder_priority(config: WalkConfig, item: int | np.ndarray, users: np.ndarray) -> np.ndarray:
    """The bottom-k priority of ``users`` as holders of ``item``: the lowest start walks."""
    return hash_of(config.seed, item, users, 0)


def walk_from(
    graph: InteractionGraph, item: int, config: WalkConfig
) -> tuple[np.ndarray, np.ndarray, frozenset[int], np.uint64]:
    """Top neighbours of ``item``, their visit counts, the items walks went on from, and
    the priority cut-off of the holders that start its walks."""
    holders = graph.holders(item)
    if len(holders) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32), frozenset(), np.uint64(0)
    priority = holder_priority(config, item, holders)
    n_walks = config.n_walks
    if len(holders) > n_walks:
        lowest = np.argpartition(priority, n_walks - 1)[:n_walks]
        cutoff = priority[lowest].max()
    else:
        lowest, cutoff = np.arange(len(holders)), np.uint64(0)
    lowest = lowest[np.argsort(priority[lowest])]
    walk = np.arange(n_walks)
    # a walk is named by its first holder and how often the holders were cycled
    first, cycle = holders[lowest[walk % len(lowest)]], walk // len(lowest)
    current = graph.pick_items(first, _unit(hash_of(config.seed, item, first, cycle, 1)))
    visits = [current]
    through: set[int] = set()
    alive = _unit(hash_of(config.seed, item, first, cycle, 2)) >= config.restart
    for hop in range(1, config.max_hops):
        if not alive.any():
            break
        through.update(current[alive].tolist())
        pick_user = _unit(hash_of(config.seed, item, first, cycle, 3 * hop + 3))
        pick_item = _unit(hash_of(config.seed, item, first, cycle, 3 * hop + 4))
        stop = _unit(hash_of(config.seed, item, first, cycle, 3 * hop + 5))
        for start in np.unique(current[alive]).tolist():
            walkers = np.flatnonzero(alive & (current == start))
            start_holders = graph.holders(start)
            users = start_holders[(pick_user[walkers] * len(start_holders)).astype(np.int64)]
            current[walkers] = graph.pick_items(users, pick_item[walkers])
        visits.append(current[alive])
        alive &= stop >= config.restart
    visited = np.concatenate(visits)
    visited = visited[visited != item]
    neighbours, counts = np.unique(visited, return_counts=True)
    order = np.lexsort((neighbours, -counts))[: config.n_neighbours]
    return neighbours[order], counts[order].astype(np.float32), frozenset(through), cutoff


def neighbourhoods_of(
    graph: InteractionGraph, config: WalkConfig, items: np.ndarray
) -> Neighbourhoods:
    """The neighbourhoods of ``items``, one row per item in the given order."""
    items = np.asarray(items, dtype=np.int64)
    out = Neighbourhoods(
        index=np.zeros((len(items), config.n_neighbours), dtype=np.int64),
        weight=np.zeros((len(items), config.n_neighbours), dtype=np.float32),
        through=[],
        cutoff=np.zeros(len(items), dtype=np.uint64),
    )
    for row, item in enumerate(items.tolist()):
        neighbours, counts, through, cutoff = walk_from(graph, item, config)
        out.index[row, : len(neighbours)] = neighbours
        out.weight[row, : len(neighbours)] = counts
        out.through.append(through)
        out.cutoff[row] = cutoff
    return out
