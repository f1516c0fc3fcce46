"""Generated (fake) profiles, the classic shilling attacks: RandomFake, AverageFake,
BandwagonFake and SegmentFake, and the statistics they are drawn from.

Both sides use them: the attacker to generate its profiles, the defender to train its
supervised detector on attacks injected into its own training graph. Each draw takes a
``numpy.random.Generator``, so every profile is reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FakeKind = Literal["random", "average", "bandwagon", "segment"]
FAKE_KINDS: tuple[FakeKind, ...] = ("random", "average", "bandwagon", "segment")
# BandwagonFake: the popular items it draws from (the top of the catalogue by holders)
BANDWAGON_TOP = 0.05
# SegmentFake: how many of the items most often held beside the target form its segment
SEGMENT_SIZE = 50


@dataclass(frozen=True)
class PlatformStats:
    """What a generated profile imitates: the platform's profile lengths (one per user)
    and its items' popularity (holders per item)."""

    lengths: np.ndarray
    popularity: np.ndarray

    @classmethod
    def of_profiles(cls, indptr: np.ndarray, items: np.ndarray, n_items: int) -> PlatformStats:
        lengths = np.diff(indptr)
        return cls(lengths[lengths > 0], np.bincount(items, minlength=n_items))

    @property
    def n_items(self) -> int:
        return len(self.popularity)


def segment_of(
    target: int, indptr: np.ndarray, items: np.ndarray, n_items: int, size: int = SEGMENT_SIZE
) -> np.ndarray:
    """The target's segment: the ``size`` items most often held in the same profiles as
    ``target`` (ties by item id); empty when no profile holds it."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    holders = np.unique(rows[items == target])
    if len(holders) == 0:
        return np.empty(0, dtype=np.int64)
    counts = np.bincount(items[np.isin(rows, holders)], minlength=n_items)
    counts[target] = 0
    order = np.lexsort((np.arange(n_items), -counts))
    return order[:size][counts[order[:size]] > 0].astype(np.int64)


def fake_profile(
    kind: FakeKind,
    target: int,
    stats: PlatformStats,
    rng: np.random.Generator,
    segment: np.ndarray | None = None,
) -> np.ndarray:
    """One generated profile holding ``target``, its length drawn from the platform's
    lengths (capped by the catalogue), its filler items drawn by ``kind``:

    - ``random``: uniformly over the catalogue;
    - ``average``: in proportion to popularity (the platform's average taste);
    - ``bandwagon``: uniformly among the most popular items (``BANDWAGON_TOP``);
    - ``segment``: the target's ``segment`` first, then by popularity if it is short.
    """
    length = int(min(rng.choice(stats.lengths), stats.n_items))
    n_fill = length - 1
    candidates = np.delete(np.arange(stats.n_items), target)
    weights: np.ndarray | None = None
    if kind == "average":
        weights = stats.popularity[candidates].astype(np.float64) + 1.0
    elif kind == "bandwagon":
        top = max(n_fill, int(np.ceil(BANDWAGON_TOP * stats.n_items)))
        popular = np.argsort(-stats.popularity, kind="stable")
        candidates = popular[popular != target][:top]
    elif kind == "segment":
        chosen = np.asarray(segment if segment is not None else [], dtype=np.int64)
        chosen = chosen[chosen != target][:n_fill]
        chosen = rng.permutation(chosen)
        rest = np.setdiff1d(candidates, chosen)
        extra = _draw(rest, stats.popularity[rest] + 1.0, n_fill - len(chosen), rng)
        return _with_target(np.concatenate([chosen, extra]), target, rng)
    elif kind != "random":
        raise ValueError(f"unknown fake profile kind {kind!r}; known: {FAKE_KINDS}")
    return _with_target(_draw(candidates, weights, n_fill, rng), target, rng)


def _draw(
    candidates: np.ndarray, weights: np.ndarray | None, n: int, rng: np.random.Generator
) -> np.ndarray:
    n = min(n, len(candidates))
    p = None if weights is None else weights / weights.sum()
    return rng.choice(candidates, n, replace=False, p=p).astype(np.int64)


def _with_target(filler: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """The filler with the target at a random position (a profile's order is its time
    order, and a target always last would give itself away)."""
    position = int(rng.integers(0, len(filler) + 1))
    return np.insert(filler, position, target).astype(np.int64)
