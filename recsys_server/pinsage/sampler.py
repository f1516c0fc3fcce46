"""Importance-based neighbourhoods from item -> user -> item random walks with restart.

As in PinSage (Ying et al. 2018) and DGL's example: from each item, ``n_walks`` walks;
each hop goes to a random user holding the current item, then to a random item of that
user; after a hop a walk stops with probability ``restart``, and after ``max_hops`` hops
it stops anyway. The ``n_neighbours`` most visited items (the item itself excluded,
ties by item id) are its neighbours, their visit counts the weights.

Every item's walks draw from their own generator, seeded by (seed, item), with a fixed
number of draws per hop. The walks of an item therefore depend only on the holder lists
and profiles they pass through: after an injection, only the items whose walks passed
through an injected profile's items (as a start or as an item the walk went on from)
need new walks, and recomputing them gives what a full recompute would.
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
    """Fixed-size neighbour lists; unused slots hold item 0 with weight 0."""

    index: np.ndarray  # (n_items, T) int64
    weight: np.ndarray  # (n_items, T) float32 visit counts
    # items each item's walks went on from (hop > 1 starts); empty when max_hops == 1
    through: list[frozenset[int]]


def empty_neighbourhoods(n_items: int, config: WalkConfig) -> Neighbourhoods:
    return Neighbourhoods(
        index=np.zeros((n_items, config.n_neighbours), dtype=np.int64),
        weight=np.zeros((n_items, config.n_neighbours), dtype=np.float32),
        through=[frozenset()] * n_items,
    )


def walk_from(
    graph: InteractionGraph, item: int, config: WalkConfig
) -> tuple[np.ndarray, np.ndarray, frozenset[int]]:
    """Top neighbours of ``item``, their visit counts, and the items walks went on from."""
    rng = np.random.default_rng((config.seed, item))
    current = np.full(config.n_walks, item, dtype=np.int64)
    alive = np.ones(config.n_walks, dtype=bool)
    visits: list[np.ndarray] = []
    through: set[int] = set()
    for hop in range(config.max_hops):
        # the same draws every hop, used or not, so one walk's path never shifts another's
        pick_user, pick_item, stop = rng.random((3, config.n_walks))
        if hop > 0:
            through.update(current[alive].tolist())
        next_item = current.copy()
        for start in np.unique(current[alive]).tolist():
            walkers = np.flatnonzero(alive & (current == start))
            holders = graph.holders(start)
            if len(holders) == 0:
                alive[walkers] = False
                continue
            users = holders[(pick_user[walkers] * len(holders)).astype(np.int64)]
            next_item[walkers] = graph.pick_items(users, pick_item[walkers])
        current = next_item
        visits.append(current[alive])
        alive &= stop >= config.restart
        if not alive.any():
            break
    visited = np.concatenate(visits) if visits else np.empty(0, dtype=np.int64)
    visited = visited[visited != item]
    neighbours, counts = np.unique(visited, return_counts=True)
    order = np.lexsort((neighbours, -counts))[: config.n_neighbours]
    return neighbours[order], counts[order].astype(np.float32), frozenset(through)


def compute_neighbourhoods(
    graph: InteractionGraph, config: WalkConfig, items: np.ndarray, into: Neighbourhoods
) -> None:
    """(Re)compute the neighbourhoods of ``items`` in place."""
    for item in np.asarray(items, dtype=np.int64).tolist():
        neighbours, counts, through = walk_from(graph, item, config)
        into.index[item] = 0
        into.weight[item] = 0
        into.index[item, : len(neighbours)] = neighbours
        into.weight[item, : len(neighbours)] = counts
        into.through[item] = through
