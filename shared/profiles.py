"""Cutting a copied profile down: the paper's window of a share of the profile around v*."""

from __future__ import annotations

import math

import numpy as np

WINDOW_SHARES = tuple(round(0.1 * k, 1) for k in range(1, 11))  # the paper's W: 10%..100%


def crop_around_target(profile: np.ndarray, target: int, share: float) -> np.ndarray:
    """The chronological window of ``round(share * len)`` items (at least 1) centred on
    ``target``, shifted inside the profile at its ends.

    The paper's example: 50% of v1..v10 around v5 keeps v3..v7.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must lie in (0, 1], got {share}")
    profile = np.asarray(profile)
    hits = np.flatnonzero(profile == target)
    if len(hits) == 0:
        raise ValueError(f"item {target} is not in the profile")
    length = max(1, math.floor(share * len(profile) + 0.5))
    start = int(hits[0]) - (length - 1) // 2
    start = min(max(start, 0), len(profile) - length)
    return profile[start : start + length]
