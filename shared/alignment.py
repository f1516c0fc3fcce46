"""Cross-domain item alignment: which source movie is which target movie.

By IMDb id where both catalogues carry one, then by normalised title and year among the
rest. Only one-to-one matches are kept: a key that points at two movies on either side
matches nothing, since a wrong match would copy the wrong movie into the target.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.datasets.titles import normalise_title
from shared.datasets.types import Movie


@dataclass
class Alignment:
    """``source_to_target`` maps source movie ids to target movie ids."""

    source_to_target: dict[int, int] = field(default_factory=dict)
    by_imdb: int = 0
    by_title: int = 0
    # movies left out because their key matched several movies on the other side
    ambiguous: int = 0

    def report(self) -> dict[str, int]:
        return {
            "matched": len(self.source_to_target),
            "by_imdb": self.by_imdb,
            "by_title_year": self.by_title,
            "ambiguous_left_out": self.ambiguous,
        }


def align_catalogues(
    target: Mapping[int, Movie],
    source: Mapping[int, Movie],
    *,
    use_imdb: bool = True,
    use_titles: bool = True,
) -> Alignment:
    alignment = Alignment()
    if use_imdb:
        pairs, ambiguous = _one_to_one(
            _keys_by_movie(source, _imdb_keys), _keys_by_movie(target, _imdb_keys)
        )
        alignment.source_to_target.update(pairs)
        alignment.by_imdb, alignment.ambiguous = len(pairs), ambiguous
    if use_titles:
        matched_targets = set(alignment.source_to_target.values())
        rest_source = {k: m for k, m in source.items() if k not in alignment.source_to_target}
        rest_target = {k: m for k, m in target.items() if k not in matched_targets}
        with_year = _mostly_dated(source) and _mostly_dated(target)

        def title_keys(movie: Movie) -> Iterable[object]:
            return _title_keys(movie, with_year)

        pairs, ambiguous = _one_to_one(
            _keys_by_movie(rest_source, title_keys), _keys_by_movie(rest_target, title_keys)
        )
        alignment.source_to_target.update(pairs)
        alignment.by_title = len(pairs)
        alignment.ambiguous += ambiguous
    return alignment


def _imdb_keys(movie: Movie) -> Iterable[object]:
    return () if movie.imdb_id is None else (movie.imdb_id,)


def _title_keys(movie: Movie, with_year: bool) -> Iterable[object]:
    if with_year and movie.year is None:
        return ()
    year = movie.year if with_year else None
    names = {normalise_title(t) for t in (movie.title, *movie.alt_titles)}
    return [(name, year) for name in names if name]


def _mostly_dated(movies: Mapping[int, Movie]) -> bool:
    return sum(m.year is not None for m in movies.values()) * 2 > len(movies)


def _keys_by_movie(movies: Mapping[int, Movie], keys) -> dict[int, set[object]]:
    return {raw_id: set(keys(movie)) for raw_id, movie in movies.items()}


def _one_to_one(
    source_keys: dict[int, set[object]], target_keys: dict[int, set[object]]
) -> tuple[dict[int, int], int]:
    """Pairs (s, t) where t is s's only candidate and s is t's only candidate."""
    targets_of_key: dict[object, set[int]] = defaultdict(set)
    for raw_id, keys in target_keys.items():
        for key in keys:
            targets_of_key[key].add(raw_id)
    candidates: dict[int, set[int]] = {}
    sources_of_target: dict[int, set[int]] = defaultdict(set)
    for raw_id, keys in source_keys.items():
        found = set().union(*(targets_of_key.get(k, ()) for k in keys)) if keys else set()
        if found:
            candidates[raw_id] = found
            for target in found:
                sources_of_target[target].add(raw_id)
    pairs: dict[int, int] = {}
    ambiguous = 0
    for raw_id, found in candidates.items():
        if len(found) == 1:
            (target,) = found
            if sources_of_target[target] == {raw_id}:
                pairs[raw_id] = target
                continue
        ambiguous += 1
    return pairs, ambiguous
