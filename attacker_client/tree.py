"""The balanced hierarchical clustering tree over source users (paper, Section 4.3.1).

Top-down: each node's users are clustered by k-means into ``c`` centroids, then assigned
one at a time (closest user-centroid pairs first) to a centroid that still has room, so
sibling clusters differ in size by at most one. ``c`` is the smallest branching with
``c^(d-1) < n <= c^d``. Leaves are users; every non-leaf node will own a policy network.

Leaves are stored in tree order (``order``), so every node covers one contiguous range
of it: masking a target is a prefix sum over that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans


@dataclass(frozen=True)
class BalancedClusterTree:
    depth: int
    branching: int
    order: np.ndarray  # leaf position -> source user
    # non-leaf nodes, root 0, depth first; node i covers leaf positions start[i]:end[i]
    start: np.ndarray
    end: np.ndarray
    level: np.ndarray  # root 0, parents of leaves depth - 1
    children: list[np.ndarray]  # child node ids, or leaf positions at the last level

    @property
    def n_nodes(self) -> int:
        return len(self.start)

    @property
    def n_users(self) -> int:
        return len(self.order)

    @classmethod
    def build(cls, vectors: np.ndarray, depth: int, seed: int = 0) -> BalancedClusterTree:
        """Cluster the users whose representations are ``vectors`` (n, e) into a tree of
        ``depth`` levels of choices."""
        n = len(vectors)
        if depth < 1:
            raise ValueError("depth must be at least 1")
        if n < 1:
            raise ValueError("no users to cluster")
        branching = branching_for(n, depth)
        rng = np.random.default_rng(seed)
        order: list[int] = []
        start: list[int] = []
        end: list[int] = []
        level: list[int] = []
        children: list[np.ndarray] = []

        def grow(members: np.ndarray, at: int) -> int:
            # depth first: a node's leaves get consecutive positions in ``order``
            node = len(start)
            start.append(len(order))
            end.append(len(order))
            level.append(at)
            children.append(np.empty(0, dtype=np.int64))
            if at == depth - 1:
                order.extend(members.tolist())
                children[node] = np.arange(start[node], len(order))
            else:
                parts = balanced_split(vectors[members], branching, rng)
                children[node] = np.array([grow(members[part], at + 1) for part in parts])
            end[node] = len(order)
            return node

        grow(np.arange(n), 0)
        return cls(
            depth=depth,
            branching=branching,
            order=np.asarray(order, dtype=np.int64),
            start=np.asarray(start, dtype=np.int64),
            end=np.asarray(end, dtype=np.int64),
            level=np.asarray(level, dtype=np.int64),
            children=children,
        )

    def holding(self, users_holding: np.ndarray) -> np.ndarray:
        """Per non-leaf node, how many of its leaves are in ``users_holding`` (the masking
        of a target: a node with 0 is masked)."""
        marked = np.zeros(self.n_users + 1, dtype=np.int64)
        marked[1:] = np.isin(self.order, users_holding)
        prefix = np.cumsum(marked)
        return prefix[self.end] - prefix[self.start]

    def leaf_mask(self, users_holding: np.ndarray) -> np.ndarray:
        """Per leaf position, whether its user is in ``users_holding``."""
        return np.isin(self.order, users_holding)


def branching_for(n: int, depth: int) -> int:
    """The smallest c >= 2 with n <= c^d: the fewest children per node that give every
    one of ``n`` users a leaf in ``depth`` levels (1 if n == 1)."""
    if n == 1:
        return 1
    c = max(2, math.ceil(n ** (1.0 / depth) - 1e-9))
    while c**depth < n:
        c += 1
    while c > 2 and (c - 1) ** depth >= n:
        c -= 1
    return c


def balanced_split(vectors: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of ``vectors`` in ``min(parts, n)`` clusters whose sizes differ by at most
    one: k-means centroids, then the closest (point, centroid) pairs first, each point
    to a centroid with room."""
    n = len(vectors)
    parts = min(parts, n)
    if parts <= 1:
        return [np.arange(n)]
    seed = int(rng.integers(0, 2**31 - 1))
    centroids = KMeans(n_clusters=parts, n_init=3, random_state=seed).fit(vectors).cluster_centers_
    capacity = np.full(parts, n // parts)
    capacity[: n % parts] += 1  # the first n % parts clusters take one more
    distance = ((vectors[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    assigned = np.full(n, -1)
    for flat in np.argsort(distance, axis=None, kind="stable"):
        point, cluster = divmod(int(flat), parts)
        if assigned[point] < 0 and capacity[cluster] > 0:
            assigned[point] = cluster
            capacity[cluster] -= 1
    return [np.flatnonzero(assigned == cluster) for cluster in range(parts)]
