from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.alignment import align_catalogues, duplicate_groups
from shared.datasets.titles import normalise_title, split_title
from shared.datasets.types import Movie


def test_split_title_year_and_alternatives() -> None:
    assert split_title("Seven (a.k.a. Se7en) (1995)") == ("Seven", ("Se7en",), 1995)
    assert split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "City of Lost Children, The",
        ("Cité des enfants perdus, La",),
        1995,
    )
    assert split_title("Babylon 5") == ("Babylon 5", (), None)
    assert split_title("Dexter (2006\u20132013)") == ("Dexter", (), 2006)


def test_normalise_title_equates_platform_spellings() -> None:
    assert normalise_title("Matrix, The") == normalise_title("The Matrix") == "the matrix"
    assert normalise_title("Amélie") == normalise_title("AMELIE")
    assert normalise_title("Cité des enfants perdus, La") == "la cite des enfants perdus"
    assert normalise_title("Homme et une femme, Un") == "un homme et une femme"
    assert normalise_title("Dr. Strangelove: or How I Learned") == "dr strangelove or how i learned"
    assert normalise_title("Fast & Furious") == normalise_title("Fast and Furious")
    assert normalise_title("Matrix") != normalise_title("The Matrix")


@given(st.text(max_size=40))
def test_normalise_title_is_idempotent(text: str) -> None:
    once = normalise_title(text)
    assert normalise_title(once) == once


def movie(raw_id: int, title: str, year: int | None, imdb: int | None = None, alts=()) -> Movie:
    return Movie(raw_id, title, year, imdb_id=imdb, alt_titles=tuple(alts))


def test_imdb_first_then_title_and_year() -> None:
    target = {
        1: movie(1, "The Matrix", 1999, imdb=133093),
        2: movie(2, "The Seventh Seal", 1957),
        3: movie(3, "Fabuleux destin d'Amélie Poulain", 2001),
    }
    source = {
        10: movie(10, "Matrix, The", 1999, imdb=133093),
        20: movie(20, "Seventh Seal, The", 1957),
        30: movie(30, "Amelie", 2001, alts=["Fabuleux destin d'Amélie Poulain, Le"]),
        40: movie(40, "The Seventh Seal", 1958),  # other year: no match
    }
    alignment = align_catalogues(target, source)
    assert alignment.source_to_target == {10: 1, 20: 2}
    assert alignment.by_imdb == 1 and alignment.by_title == 1


def test_alternative_title_matches() -> None:
    target = {1: movie(1, "Fabuleux destin d'Amélie Poulain, Le", 2001)}
    source = {2: movie(2, "Amelie", 2001, alts=["Fabuleux destin d'Amélie Poulain, Le"])}
    assert align_catalogues(target, source).source_to_target == {2: 1}


def test_ambiguous_keys_match_nothing() -> None:
    # two films of one title and year (their IMDb ids differ): the source's is either
    target = {1: movie(1, "Hamlet", 1990, imdb=100), 2: movie(2, "Hamlet", 1990, imdb=101)}
    source = {3: movie(3, "Hamlet", 1990), 4: movie(4, "Othello", 1995)}
    target[5] = movie(5, "Othello", 1995)
    alignment = align_catalogues(target, source)
    assert alignment.source_to_target == {4: 5}
    assert alignment.ambiguous == 1


def test_duplicate_imdb_ids_are_not_matched() -> None:
    target = {1: movie(1, "A", 2000, imdb=7), 2: movie(2, "B", 2000, imdb=7)}
    source = {3: movie(3, "C", 2000, imdb=7)}
    assert align_catalogues(target, source, use_titles=False).source_to_target == {}


def test_titles_without_years_match_when_a_platform_has_none() -> None:
    target = {1: movie(1, "The Matrix", None), 2: movie(2, "Heat", None)}
    source = {3: movie(3, "Matrix, The", 1999), 4: movie(4, "Heat", 1995)}
    assert align_catalogues(target, source).source_to_target == {3: 1, 4: 2}


def test_a_movie_listed_twice_on_a_platform_is_merged_not_dropped() -> None:
    """ml-100k lists some movies twice (two ids, one title and year): both used to make
    each other ambiguous and neither matched."""
    target = {1: movie(1, "Chasing Amy", 1997), 5: movie(5, "Heat", 1995)}
    source = {
        10: movie(10, "Chasing Amy", 1997),
        11: movie(11, "Chasing Amy", 1997),  # the same movie again
        12: movie(12, "Heat", 1995),
    }
    alignment = align_catalogues(target, source)
    assert alignment.source_to_target == {10: 1, 11: 1, 12: 5}
    assert alignment.by_title == 2 and alignment.ambiguous == 0
    assert alignment.report()["duplicates_merged"] == 1
    # on the target side the matches go to the entry kept (the smallest id)
    twice = {**target, 3: movie(3, "Chasing Amy", 1997)}
    assert align_catalogues(twice, {10: source[10]}).source_to_target == {10: 1}


def test_entries_with_different_imdb_ids_are_different_films_never_merged() -> None:
    movies = {
        838: movie(838, "Emma", 1996, imdb=116191),
        26958: movie(26958, "Emma", 1996, imdb=118308),  # the TV film of the same year
        1: movie(1, "Heat", 1995, imdb=113277),
        2: movie(2, "Heat", 1995),  # no IMDb id: nothing contradicts it
        3: movie(3, "Heat", None),  # undated: never merged
    }
    assert duplicate_groups(movies) == {2: 1}
    # no duplicates: the report is what it was before merging existed
    report = align_catalogues({1: movies[1]}, {7: movie(7, "Heat", 1995)}).report()
    assert "duplicates_merged" not in report and "by_title_near_year" not in report


def test_year_tolerance_is_opt_in_and_counted() -> None:
    target = {1: movie(1, "Heat", 1995), 2: movie(2, "Ran", 1985)}
    source = {10: movie(10, "Heat", 1996), 20: movie(20, "Ran", 1985)}
    exact = align_catalogues(target, source)
    assert exact.source_to_target == {20: 2} and exact.by_title_near_year is None
    near = align_catalogues(target, source, year_tolerance=1)
    assert near.source_to_target == {20: 2, 10: 1}
    assert near.by_title == 1 and near.report()["by_title_near_year"] == 1
    assert align_catalogues(target, source, year_tolerance=1, use_titles=False).report() == {
        "matched": 0, "by_imdb": 0, "by_title_year": 0, "ambiguous_left_out": 0,
        "by_title_near_year": 0,
    }  # fmt: skip


def test_year_tolerance_never_overrides_an_exact_year_nor_guesses_between_two() -> None:
    target = {1: movie(1, "Heat", 1995), 2: movie(2, "Solaris", 1971), 3: movie(3, "Solaris", 1973)}
    source = {
        10: movie(10, "Heat", 1995),
        11: movie(11, "Heat", 1996),  # another Heat: 1995 is taken by the exact match
        20: movie(20, "Solaris", 1972),  # one year from both: ambiguous
    }
    alignment = align_catalogues(target, source, year_tolerance=1)
    assert alignment.source_to_target == {10: 1}
    assert alignment.by_title_near_year == 0
    with pytest.raises(ValueError, match="year_tolerance"):
        align_catalogues(target, source, year_tolerance=-1)
