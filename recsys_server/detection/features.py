"""Profile features of users, and the distribution distance of injected profiles.

A profile here is implicit feedback in time order: the scenario has no ratings, and an
injected profile carries no timestamps (``/inject_user`` takes the order alone), so the
rating-deviation and time features of the shilling literature do not apply. What is
left is what DegreeSAD builds on: a profile's length and the popularity (training
degree) of the items it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

FEATURES = (
    "length",
    "pop_sum",
    "pop_mean",
    "pop_std",
    "pop_min",
    "pop_q25",
    "pop_median",
    "pop_q75",
    "pop_max",
    "pop_range",
    "log_pop_mean",
)


@dataclass(frozen=True)
class Profiles:
    """Profiles as CSR arrays: profile ``u`` is ``items[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def rows(self) -> np.ndarray:
        """The profile of each entry of ``items``."""
        return np.repeat(np.arange(len(self)), self.lengths)

    @classmethod
    def of(cls, profiles: Sequence[Sequence[int] | np.ndarray]) -> Profiles:
        lengths = np.array([len(p) for p in profiles], dtype=np.int64)
        indptr = np.zeros(len(profiles) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        parts = [np.asarray(p, dtype=np.int64) for p in profiles]
        items = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return cls(indptr, items)

    def concat(self, other: Profiles) -> Profiles:
        indptr = np.concatenate([self.indptr, other.indptr[1:] + self.indptr[-1]])
        return Profiles(indptr, np.concatenate([self.items, other.items]))

    def subset(self, rows: np.ndarray) -> Profiles:
        return Profiles.of([self.items[self.indptr[r] : self.indptr[r + 1]] for r in rows])


def profile_features(profiles: Profiles, popularity: np.ndarray) -> np.ndarray:
    """(n_profiles, len(FEATURES)) float64: length and the distribution of the popularity
    of a profile's items. Every profile must hold at least one item."""
    lengths = profiles.lengths
    if (lengths == 0).any():
        raise ValueError("an empty profile has no features")
    rows = profiles.rows
    pop = popularity[profiles.items].astype(np.float64)
    order = np.lexsort((pop, rows))  # each profile's popularities, ascending
    ordered = pop[order]
    starts = profiles.indptr[:-1]
    total = np.add.reduceat(ordered, starts)
    mean = total / lengths
    var = np.add.reduceat(ordered**2, starts) / lengths - mean**2
    low, high = ordered[starts], ordered[profiles.indptr[1:] - 1]
    quartiles = [_row_quantile(ordered, profiles.indptr, q) for q in (0.25, 0.5, 0.75)]
    log_mean = np.add.reduceat(np.log1p(ordered), starts) / lengths
    columns = [lengths, total, mean, np.sqrt(np.maximum(var, 0.0)), low, *quartiles, high]
    return np.column_stack([*columns, high - low, log_mean]).astype(np.float64)


def _row_quantile(ordered: np.ndarray, indptr: np.ndarray, q: float) -> np.ndarray:
    """Per profile, the ``q`` quantile of its sorted values (linear, as ``np.quantile``)."""
    position = indptr[:-1] + q * (np.diff(indptr) - 1)
    below = np.floor(position).astype(np.int64)
    above = np.ceil(position).astype(np.int64)
    weight = position - below
    return ordered[below] * (1 - weight) + ordered[above] * weight


def popularity_histogram(items: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """The share of ``items`` (every item of a set of profiles) in each popularity bin:
    bin b holds items with 2^b - 1 <= popularity < 2^(b+1) - 1 (0, 1-2, 3-6, ...)."""
    n_bins = int(np.log2(popularity.max() + 1)) + 1
    bins = np.floor(np.log2(popularity[items].astype(np.float64) + 1)).astype(np.int64)
    counts = np.bincount(bins, minlength=n_bins).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def distribution_distances(
    injected: Profiles, real: Profiles, popularity: np.ndarray
) -> tuple[float, float]:
    """Jensen-Shannon distance (base 2, in [0, 1]) and total-variation distance between
    the item-popularity histograms of the injected and the real profiles."""
    p = popularity_histogram(injected.items, popularity)
    q = popularity_histogram(real.items, popularity)
    return float(jensenshannon(p, q, base=2)), float(0.5 * np.abs(p - q).sum())
