"""In-memory form of one platform's data: explicit ratings and the movie catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Movie:
    """One catalogue entry. ``raw_id`` is the platform's own movie id."""

    raw_id: int
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    imdb_id: int | None = None
    alt_titles: tuple[str, ...] = ()


@dataclass
class Ratings:
    """Explicit ratings as parallel arrays, in file order (platform ids, not indices)."""

    user: np.ndarray  # int64 raw user ids
    item: np.ndarray  # int64 raw movie ids
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64 unix seconds

    def __post_init__(self) -> None:
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        self.rating = np.asarray(self.rating, dtype=np.float32)
        self.timestamp = np.asarray(self.timestamp, dtype=np.int64)
        n = len(self.user)
        if not (len(self.item) == len(self.rating) == len(self.timestamp) == n):
            raise ValueError("ratings arrays must have the same length")

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Dataset:
    """One platform: its ratings, its catalogue and how to read 'liked' from a rating."""

    name: str
    ratings: Ratings
    movies: dict[int, Movie]
    rating_max: float
    like_threshold: float
    # file name (or generator parameter set) -> sha256, recorded in scenario manifests
    fingerprint: dict[str, str] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(np.unique(self.ratings.user).size)
