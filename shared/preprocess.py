"""Explicit ratings -> implicit, chronological interactions.

The paper keeps only top ratings; on data this small that leaves most users with one or
two items, so the default keeps every "liked" rating (the dataset's ``like_threshold``)
and the paper's setting is ``top_rating_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.datasets.types import Dataset
from shared.errors import EmptyResultError


@dataclass
class Interactions:
    """Implicit feedback: one row per (user, item), sorted by user, then time, then item."""

    user: np.ndarray  # int64 raw user ids
    item: np.ndarray  # int64 raw item ids
    timestamp: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.user[mask], self.item[mask], self.timestamp[mask])


def liked_interactions(
    dataset: Dataset, *, top_rating_only: bool = False, threshold: float | None = None
) -> Interactions:
    """Ratings at or above ``threshold`` (default: the dataset's like threshold; with
    ``top_rating_only``, its top rating), chronological, with a repeated (user, item) pair
    kept once, at its first time."""
    if top_rating_only:
        threshold = dataset.rating_max
    elif threshold is None:
        threshold = dataset.like_threshold
    ratings = dataset.ratings
    keep = ratings.rating >= threshold
    if not keep.any():
        raise EmptyResultError(
            f"dataset {dataset.name}: no rating is >= {threshold:g} "
            f"({len(ratings)} ratings read); lower the like threshold"
        )
    user, item, stamp = ratings.user[keep], ratings.item[keep], ratings.timestamp[keep]
    order = np.lexsort((item, stamp, user))
    user, item, stamp = user[order], item[order], stamp[order]
    _, item_index = np.unique(item, return_inverse=True)
    pair = user * np.int64(item_index.max() + 1) + item_index
    _, first = np.unique(pair, return_index=True)
    first.sort()  # back to (user, time, item) order
    return Interactions(user[first], item[first], stamp[first])


def profile_bounds(user: np.ndarray) -> np.ndarray:
    """CSR-style offsets of the runs of equal values in a sorted user array."""
    change = np.flatnonzero(np.diff(user)) + 1
    return np.concatenate(([0], change, [len(user)])).astype(np.int64)
