from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.datasets import readers
from shared.errors import DataFormatError, DatasetNotFoundError
from tests import upstream_fixtures as fx


def test_movielens_100k(tmp_path: Path) -> None:
    ratings, movies = readers.read_movielens_100k(fx.ml100k(tmp_path))
    assert ratings.user.tolist() == [196, 186, 196]
    assert ratings.item.tolist() == [242, 302, 302]
    assert ratings.rating.tolist() == [3.0, 3.0, 5.0]
    assert ratings.timestamp.tolist() == [881250949, 891717742, 881250900]
    assert movies[242].title == "Kolya" and movies[242].year == 1996
    assert movies[242].genres == ("Comedy",)
    assert movies[302].genres == ("Crime", "Film-Noir", "Mystery", "Thriller")


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_movielens_dat_either_encoding(tmp_path: Path, encoding: str) -> None:
    ratings, movies = readers.read_movielens_dat(fx.ml_dat(tmp_path, encoding))
    assert len(ratings) == 3 and ratings.user.dtype == np.int64
    assert movies[3].title == "Cité des enfants perdus, La"
    assert movies[661].genres == ("Animation", "Children's", "Musical")
    assert all(m.imdb_id is None for m in movies.values())


def test_movielens_csv_with_links_and_alt_titles(tmp_path: Path) -> None:
    ratings, movies = readers.read_movielens_csv(fx.ml_csv(tmp_path))
    assert ratings.rating.tolist() == [4.0, 2.5, 5.0]
    assert movies[2].title == "Seven" and movies[2].alt_titles == ("Se7en",)
    assert movies[3].title == "Matrix, The" and movies[3].imdb_id == 133093
    assert movies[4].year is None and movies[4].genres == () and movies[4].imdb_id is None


def test_movietweetings_ids_are_imdb_ids(tmp_path: Path) -> None:
    ratings, movies = readers.read_movietweetings(fx.movietweetings(tmp_path))
    assert ratings.item.tolist() == [114709, 133093, 133093]
    assert ratings.rating.max() == 10
    assert movies[133093].imdb_id == 133093 and movies[133093].title == "The Matrix"
    assert movies[21283].genres == ()


def test_netflix_blocks_and_titles_with_commas(tmp_path: Path) -> None:
    ratings, movies = readers.read_netflix(fx.netflix(tmp_path))
    assert ratings.item.tolist() == [1, 1, 2]
    assert ratings.user.tolist() == [1488844, 822109, 1488844]
    assert ratings.timestamp[0] == 1125964800  # 2005-09-06 UTC
    assert movies[2].year is None
    assert movies[3].title == "Character, The Sequel" and movies[3].year == 1997


@pytest.mark.parametrize("utf16", [True, False])
def test_flixster_header_and_encoding(tmp_path: Path, utf16: bool) -> None:
    ratings, movies = readers.read_flixster(fx.flixster(tmp_path, utf16=utf16))
    assert ratings.user.tolist() == [1, 2]
    assert ratings.rating.tolist() == [4.5, 1.0]
    assert ratings.timestamp[0] < ratings.timestamp[1]
    assert movies[10].title == "The Matrix" and movies[11].title == "Amélie"


def test_wrong_separator_names_file_line_and_separator(tmp_path: Path) -> None:
    fx.movietweetings(tmp_path)
    fx.write(tmp_path / "movies.dat", "0114709::Toy Story (1995)::Comedy\n0133093#The Matrix#Act\n")
    with pytest.raises(DataFormatError) as info:
        readers.read_movietweetings(tmp_path)
    assert info.value.line == 2 and info.value.path.name == "movies.dat"
    assert "'#'" in str(info.value) and "'::'" in str(info.value)


@pytest.mark.parametrize(
    ("line", "reason"),
    [("1::x::9::1", "movie id"), ("1::1::9", "expected 4 fields"), ("1::1::nine::1", "rating")],
)
def test_malformed_rating_row(tmp_path: Path, line: str, reason: str) -> None:
    fx.movietweetings(tmp_path)
    fx.write(tmp_path / "ratings.dat", f"1::0114709::9::1365029107\n\n{line}\n")
    with pytest.raises(DataFormatError, match=reason) as info:
        readers.read_movietweetings(tmp_path)
    assert info.value.line == 3


def test_csv_header_is_checked(tmp_path: Path) -> None:
    fx.ml_csv(tmp_path)
    fx.write(tmp_path / "ratings.csv", "user,movie,rating,timestamp\n1,1,4.0,1\n")
    with pytest.raises(DataFormatError, match="expected header userId,movieId") as info:
        readers.read_movielens_csv(tmp_path)
    assert info.value.line == 1


def test_empty_ratings_file_is_an_error(tmp_path: Path) -> None:
    fx.movietweetings(tmp_path)
    fx.write(tmp_path / "ratings.dat", "\n")
    with pytest.raises(DataFormatError, match="no ratings"):
        readers.read_movietweetings(tmp_path)


def test_netflix_rating_before_movie_header(tmp_path: Path) -> None:
    fx.netflix(tmp_path)
    fx.write(tmp_path / "combined_data_1.txt", "1488844,3,2005-09-06\n")
    with pytest.raises(DataFormatError, match="before the first 'movie_id:'"):
        readers.read_netflix(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"u\.data"):
        readers.read_movielens_100k(tmp_path)
