from __future__ import annotations

import numpy as np
import pytest

from shared.datasets.types import Dataset, Ratings
from shared.errors import EmptyResultError
from shared.preprocess import liked_interactions, profile_bounds


def dataset(rows: list[tuple[int, int, float, int]]) -> Dataset:
    user, item, rating, stamp = (np.array(c) for c in zip(*rows, strict=True))
    return Dataset("fixture", Ratings(user, item, rating, stamp), {}, 5.0, 4.0)


ROWS = [
    (2, 30, 5.0, 50),
    (1, 10, 4.0, 300),
    (1, 20, 5.0, 100),
    (1, 10, 5.0, 200),  # repeated pair: kept once, at its first time (200)
    (1, 40, 3.5, 150),  # not liked
    (2, 10, 4.5, 50),  # same time as item 30: ties broken by item id
]


def test_liked_interactions_are_chronological_and_unique() -> None:
    rows = liked_interactions(dataset(ROWS))
    assert rows.user.tolist() == [1, 1, 2, 2]
    assert rows.item.tolist() == [20, 10, 10, 30]
    assert rows.timestamp.tolist() == [100, 200, 50, 50]


def test_top_rating_only_and_custom_threshold() -> None:
    assert liked_interactions(dataset(ROWS), top_rating_only=True).item.tolist() == [20, 10, 30]
    assert 40 in liked_interactions(dataset(ROWS), threshold=3.5).item.tolist()


def test_nothing_liked_names_the_threshold() -> None:
    with pytest.raises(EmptyResultError, match=r">= 4"):
        liked_interactions(dataset([(1, 1, 2.0, 1)]))


def test_profile_bounds() -> None:
    assert profile_bounds(np.array([3, 3, 5, 9, 9, 9])).tolist() == [0, 2, 3, 6]
