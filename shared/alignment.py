"""Cross-domain item alignment: which source movie is which target movie.

By IMDb id where both catalogues carry one, then by normalised title and year among the
rest, then (opt-in, ``year_tolerance``) by title with the year off by at most that much.
Only one-to-one matches are kept: a key that points at two movies on either side
matches nothing, since a wrong match would copy the wrong movie into the target.

Two entries of one platform with the same normalised title and year and no conflicting
IMDb ids are one movie listed twice (ml-100k has 18 such pairs): they are merged before
matching (the smallest id stands for the group), so the movie matches once instead of
the pair making each other ambiguous and both being dropped: a source platform's
entries all map to the match, a target platform's matches go to the entry kept. Entries
whose IMDb ids differ are different films (ml-latest-small's two "Emma (1996)") and are
never merged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from shared.datasets.titles import normalise_title
from shared.datasets.types import Movie

# a movie's key for title matching: its normalised title and year (None: year not compared)
TitleKey = tuple[str, int | None]
Key = TypeVar("Key", bound=Hashable)  # what movies are matched on: an IMDb id or a TitleKey


@dataclass
class Alignment:
    """``source_to_target`` maps source movie ids to target movie ids."""

    source_to_target: dict[int, int] = field(default_factory=dict)
    by_imdb: int = 0
    by_title: int = 0
    # movies left out because their key matched several movies on the other side
    ambiguous: int = 0
    # entries folded into another of the same title and year on their own platform
    merged_duplicates: int = 0
    # matched only with the year off by 1..year_tolerance (None: tolerance not asked for)
    by_title_near_year: int | None = None

    def report(self) -> dict[str, int]:
        report = {
            "matched": len(self.source_to_target),
            "by_imdb": self.by_imdb,
            "by_title_year": self.by_title,
            "ambiguous_left_out": self.ambiguous,
        }
        # added only when they happened or were asked for: the report is part of a
        # scenario's fingerprint, and scenarios (and models) built before stay current
        if self.merged_duplicates:
            report["duplicates_merged"] = self.merged_duplicates
        if self.by_title_near_year is not None:
            report["by_title_near_year"] = self.by_title_near_year
        return report


def align_catalogues(
    target: Mapping[int, Movie],
    source: Mapping[int, Movie],
    *,
    use_imdb: bool = True,
    use_titles: bool = True,
    year_tolerance: int = 0,
) -> Alignment:
    if year_tolerance < 0:
        raise ValueError(f"year_tolerance must be 0 or more, got {year_tolerance}")
    alignment = Alignment()
    source_merged, target_merged = duplicate_groups(source), duplicate_groups(target)
    alignment.merged_duplicates = len(source_merged) + len(target_merged)
    source = {k: m for k, m in source.items() if k not in source_merged}
    target = {k: m for k, m in target.items() if k not in target_merged}
    if use_imdb:
        pairs, ambiguous = _one_to_one(
            _keys_by_movie(source, _imdb_keys), _keys_by_movie(target, _imdb_keys)
        )
        alignment.source_to_target.update(pairs)
        alignment.by_imdb, alignment.ambiguous = len(pairs), ambiguous
    if use_titles:
        with_year = _mostly_dated(source) and _mostly_dated(target)
        pairs, ambiguous = _match_rest(alignment, source, target, with_year, 0)
        alignment.by_title = len(pairs)
        alignment.ambiguous += ambiguous
        if year_tolerance:
            # what stays ambiguous here was ambiguous at the exact year already: not again
            pairs, _ = _match_rest(alignment, source, target, with_year, year_tolerance)
            alignment.by_title_near_year = len(pairs)
    elif year_tolerance:
        alignment.by_title_near_year = 0
    # a merged entry maps where the entry it was folded into maps
    for member, kept in source_merged.items():
        if kept in alignment.source_to_target:
            alignment.source_to_target[member] = alignment.source_to_target[kept]
    return alignment


def _match_rest(
    alignment: Alignment,
    source: Mapping[int, Movie],
    target: Mapping[int, Movie],
    with_year: bool,
    tolerance: int,
) -> tuple[dict[int, int], int]:
    """One-to-one title matches among the movies not matched yet, added to ``alignment``;
    a source movie's year may be off by up to ``tolerance``."""
    matched_targets = set(alignment.source_to_target.values())
    rest_source = {k: m for k, m in source.items() if k not in alignment.source_to_target}
    rest_target = {k: m for k, m in target.items() if k not in matched_targets}
    shifts = range(-tolerance, tolerance + 1) if with_year else (0,)

    def source_keys(movie: Movie) -> Iterable[TitleKey]:
        return [(name, year + shift if year is not None else None)
                for name, year in _title_keys(movie, with_year) for shift in shifts]  # fmt: skip

    def target_keys(movie: Movie) -> Iterable[TitleKey]:
        return _title_keys(movie, with_year)

    pairs, ambiguous = _one_to_one(
        _keys_by_movie(rest_source, source_keys), _keys_by_movie(rest_target, target_keys)
    )
    alignment.source_to_target.update(pairs)
    return pairs, ambiguous


def duplicate_groups(movies: Mapping[int, Movie]) -> dict[int, int]:
    """Entries listed twice on one platform: each merged entry's id -> the id kept (the
    smallest of its group). A group is one normalised title and one year, with at most
    one IMDb id among its entries; undated entries are never merged."""
    groups: dict[tuple[str, int], list[Movie]] = defaultdict(list)
    for movie in movies.values():
        name = normalise_title(movie.title)
        if movie.year is not None and name:
            groups[(name, movie.year)].append(movie)
    merged: dict[int, int] = {}
    for members in groups.values():
        imdb_ids = {m.imdb_id for m in members if m.imdb_id is not None}
        if len(members) > 1 and len(imdb_ids) <= 1:
            kept = min(m.raw_id for m in members)
            merged.update({m.raw_id: kept for m in members if m.raw_id != kept})
    return merged


def _imdb_keys(movie: Movie) -> Iterable[int]:
    return () if movie.imdb_id is None else (movie.imdb_id,)


def _title_keys(movie: Movie, with_year: bool) -> Iterable[TitleKey]:
    if with_year and movie.year is None:
        return ()
    year = movie.year if with_year else None
    names = {normalise_title(t) for t in (movie.title, *movie.alt_titles)}
    return [(name, year) for name in names if name]


def _mostly_dated(movies: Mapping[int, Movie]) -> bool:
    return sum(m.year is not None for m in movies.values()) * 2 > len(movies)


def _keys_by_movie(
    movies: Mapping[int, Movie], keys: Callable[[Movie], Iterable[Key]]
) -> dict[int, set[Key]]:
    return {raw_id: set(keys(movie)) for raw_id, movie in movies.items()}


def _one_to_one(
    source_keys: dict[int, set[Key]], target_keys: dict[int, set[Key]]
) -> tuple[dict[int, int], int]:
    """Pairs (s, t) where t is s's only candidate and s is t's only candidate."""
    targets_of_key: dict[Key, set[int]] = defaultdict(set)
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
