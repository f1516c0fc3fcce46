"""Item content features from the public catalogue: genres (multi-hot) and release year."""

from __future__ import annotations

import numpy as np

from shared.datasets.types import Movie

_YEAR_LOW, _YEAR_HIGH = 1900, 2030
_DECADES = np.arange(1910, 2030, 10)


def content_features(catalogue: list[Movie]) -> tuple[np.ndarray, list[str]]:
    """(n_items, n_features) float32 matrix and the feature names.

    Genres as multi-hot over the genres the catalogue uses; the year as a scaled value,
    a decade one-hot and a missing-year flag.
    """
    genres = sorted({g for movie in catalogue for g in movie.genres})
    genre_index = {g: i for i, g in enumerate(genres)}
    n_decades = len(_DECADES) + 1
    features = np.zeros((len(catalogue), len(genres) + n_decades + 2), dtype=np.float32)
    for row, movie in enumerate(catalogue):
        for genre in movie.genres:
            features[row, genre_index[genre]] = 1.0
        if movie.year is None:
            features[row, -1] = 1.0
            continue
        decade = int(np.searchsorted(_DECADES, movie.year, side="right"))
        features[row, len(genres) + decade] = 1.0
        year = min(max(movie.year, _YEAR_LOW), _YEAR_HIGH)
        features[row, -2] = (year - _YEAR_LOW) / (_YEAR_HIGH - _YEAR_LOW)
    names = [f"genre:{g}" for g in genres]
    names += [f"decade:<{_DECADES[0]}"] + [f"decade:{d}s" for d in _DECADES]
    names += ["year", "year:missing"]
    return features, names
