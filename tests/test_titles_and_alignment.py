from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.alignment import align_catalogues
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
    target = {1: movie(1, "Hamlet", 1990), 2: movie(2, "Hamlet", 1990)}
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
