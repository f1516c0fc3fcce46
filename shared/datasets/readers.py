"""Readers for the upstream file formats of the movie platforms the simulator supports.

Each reader takes the folder that holds a dataset's files as published and returns
``(Ratings, {movie id: Movie})``. Any malformed line stops the read with a
:class:`~shared.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

import calendar
import csv
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from shared.datasets.titles import split_title
from shared.datasets.types import Movie, Ratings
from shared.errors import DataFormatError, DatasetNotFoundError

Reader = Callable[[Path], tuple[Ratings, dict[int, Movie]]]

_KNOWN_SEPARATORS = ("::", "\t", "|", ",", ";", "#")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def require_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise DatasetNotFoundError(f"missing file {path}")
    return path


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines without their end-of-line, numbered from 1.

    UTF-16 (Flixster's ratings are published so) is recognised by its BOM or NUL bytes;
    otherwise each line is UTF-8, falling back to Latin-1 (the older MovieLens files).
    """
    with open(path, "rb") as raw:
        head = raw.read(4096)
        raw.seek(0)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(b"\x00") > len(head) // 4:
            encoding = "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le"
            with io.TextIOWrapper(raw, encoding=encoding, newline=None) as text:
                for lineno, line in enumerate(text, 1):
                    yield lineno, line.rstrip("\r\n")
            return
        for lineno, data in enumerate(raw, 1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError:
                line = data.decode("latin-1")
            yield lineno, line.lstrip("\ufeff").rstrip("\r\n")


def _split_rows(
    path: Path, sep: str, n_fields: int, *, skip_header: bool = False, maxsplit: int = -1
) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines split on ``sep``; a line with another field count is an error."""
    for lineno, line in _decoded_lines(path):
        if skip_header and lineno == 1:
            continue
        if not line.strip():
            continue
        fields = line.split(sep, maxsplit)
        if len(fields) != n_fields:
            raise DataFormatError(path, lineno, _field_count_message(line, sep, n_fields))
        yield lineno, fields


def _field_count_message(line: str, sep: str, n_fields: int) -> str:
    found = line.count(sep) + 1 if sep in line else 1
    message = f"expected {n_fields} fields separated by {sep!r}, found {found}"
    if sep not in line:
        other = next((s for s in _KNOWN_SEPARATORS if s != sep and s in line), None)
        if other is not None:
            message += f" (the line seems to use {other!r} as separator)"
    return f"{message}: {line[:80]!r}"


def _parse(path: Path, lineno: int, convert: Callable[[str], object], value: str, what: str):
    try:
        return convert(value.strip())
    except ValueError:
        raise DataFormatError(path, lineno, f"{what} is not a valid value: {value!r}") from None


def _to_ratings(rows: list[tuple[int, int, float, int]], path: Path) -> Ratings:
    if not rows:
        raise DataFormatError(path, None, "no ratings in file")
    users, items, ratings, stamps = zip(*rows, strict=True)
    return Ratings(np.array(users), np.array(items), np.array(ratings), np.array(stamps))


def _sep_ratings(path: Path, sep: str, *, skip_header: bool = False) -> Ratings:
    """``user SEP item SEP rating SEP timestamp`` lines (MovieLens, MovieTweetings)."""
    rows = []
    for lineno, (user, item, rating, stamp) in _split_rows(path, sep, 4, skip_header=skip_header):
        rows.append(
            (
                _parse(path, lineno, int, user, "user id"),
                _parse(path, lineno, int, item, "movie id"),
                _parse(path, lineno, float, rating, "rating"),
                _parse(path, lineno, int, stamp, "timestamp"),
            )
        )
    return _to_ratings(rows, path)


def _genres(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.strip().split("|") if g and g != "(no genres listed)")


def _movie(raw_id: int, full_title: str, genres: tuple[str, ...], **extra) -> Movie:
    title, alts, year = split_title(full_title)
    return Movie(raw_id, title, year, genres, alt_titles=alts, **extra)


def read_movielens_100k(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """ml-100k: ``u.data`` (tab-separated) and ``u.item`` (pipe-separated, 19 genre flags)."""
    ratings = _sep_ratings(require_file(folder, "u.data"), "\t")
    path = require_file(folder, "u.item")
    movies: dict[int, Movie] = {}
    for lineno, fields in _split_rows(path, "|", 5 + len(_ML100K_GENRES)):
        raw_id = _parse(path, lineno, int, fields[0], "movie id")
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise DataFormatError(path, lineno, f"genre flags must be 0 or 1: {flags}")
        genres = tuple(g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f == "1")
        movies[raw_id] = _movie(raw_id, fields[1], tuple(g for g in genres if g != "unknown"))
    return ratings, movies


def read_movielens_dat(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """ml-1m / ml-10m: ``ratings.dat`` and ``movies.dat``, ``::``-separated."""
    ratings = _sep_ratings(require_file(folder, "ratings.dat"), "::")
    return ratings, _dat_movies(require_file(folder, "movies.dat"), imdb_ids=False)


def read_movietweetings(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """MovieTweetings: ``ratings.dat`` and ``movies.dat``, ``::``-separated; ids are IMDb ids."""
    ratings = _sep_ratings(require_file(folder, "ratings.dat"), "::")
    return ratings, _dat_movies(require_file(folder, "movies.dat"), imdb_ids=True)


def _dat_movies(path: Path, *, imdb_ids: bool) -> dict[int, Movie]:
    movies: dict[int, Movie] = {}
    for lineno, (raw, title, genres) in _split_rows(path, "::", 3):
        raw_id = _parse(path, lineno, int, raw, "movie id")
        imdb = raw_id if imdb_ids else None
        movies[raw_id] = _movie(raw_id, title, _genres(genres), imdb_id=imdb)
    return movies


def _csv_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Rows of a CSV file whose first line must be ``header``."""
    lines = _decoded_lines(path)
    reader = csv.reader(line for _, line in lines)
    for row in reader:
        lineno = reader.line_num
        if lineno == 1:
            if tuple(h.strip() for h in row) != header:
                raise DataFormatError(path, 1, f"expected header {','.join(header)}, found {row}")
            continue
        if not row:
            continue
        if len(row) != len(header):
            message = f"expected {len(header)} comma-separated fields, found {len(row)}"
            raise DataFormatError(path, lineno, f"{message}: {','.join(row)[:80]!r}")
        yield lineno, row


def read_movielens_csv(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """ml-20m / ml-latest / ml-latest-small: ``ratings.csv``, ``movies.csv``, ``links.csv``."""
    path = require_file(folder, "ratings.csv")
    rows = []
    for lineno, (user, item, rating, stamp) in _csv_rows(
        path, ("userId", "movieId", "rating", "timestamp")
    ):
        rows.append(
            (
                _parse(path, lineno, int, user, "userId"),
                _parse(path, lineno, int, item, "movieId"),
                _parse(path, lineno, float, rating, "rating"),
                _parse(path, lineno, int, stamp, "timestamp"),
            )
        )
    ratings = _to_ratings(rows, path)
    links_path = require_file(folder, "links.csv")
    imdb: dict[int, int] = {}
    for lineno, (movie, imdb_id, _tmdb) in _csv_rows(links_path, ("movieId", "imdbId", "tmdbId")):
        key = _parse(links_path, lineno, int, movie, "movieId")
        if imdb_id.strip():
            imdb[key] = _parse(links_path, lineno, int, imdb_id, "imdbId")
    path = require_file(folder, "movies.csv")
    movies: dict[int, Movie] = {}
    for lineno, (raw, title, genres) in _csv_rows(path, ("movieId", "title", "genres")):
        raw_id = _parse(path, lineno, int, raw, "movieId")
        movies[raw_id] = _movie(raw_id, title, _genres(genres), imdb_id=imdb.get(raw_id))
    return ratings, movies


def _unix_day(path: Path, lineno: int, text: str) -> int:
    """``YYYY-MM-DD`` (optionally followed by a time) as unix seconds, UTC."""
    try:
        day = datetime.strptime(text.strip()[:10], "%Y-%m-%d")
    except ValueError:
        raise DataFormatError(path, lineno, f"date is not YYYY-MM-DD: {text!r}") from None
    return calendar.timegm(day.timetuple())


def read_netflix(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """Netflix Prize: ``combined_data_*.txt`` (``movie_id:`` blocks of ``customer,rating,date``)
    and ``movie_titles.csv`` (``movie_id,year,title``; year may be NULL, titles hold commas)."""
    parts = sorted(folder.glob("combined_data_*.txt"))
    if not parts:
        raise DatasetNotFoundError(f"missing files {folder}/combined_data_*.txt")
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    stamps: list[int] = []
    for path in parts:
        movie: int | None = None
        for lineno, line in _decoded_lines(path):
            line = line.strip()
            if not line:
                continue
            if line.endswith(":"):
                movie = _parse(path, lineno, int, line[:-1], "movie id")
                continue
            if movie is None:
                raise DataFormatError(path, lineno, "rating line before the first 'movie_id:' line")
            fields = line.split(",")
            if len(fields) != 3:
                raise DataFormatError(path, lineno, _field_count_message(line, ",", 3))
            users.append(_parse(path, lineno, int, fields[0], "customer id"))
            items.append(movie)
            ratings.append(_parse(path, lineno, float, fields[1], "rating"))
            stamps.append(_unix_day(path, lineno, fields[2]))
    if not users:
        raise DataFormatError(parts[0], None, "no ratings in file")
    path = require_file(folder, "movie_titles.csv")
    movies: dict[int, Movie] = {}
    for lineno, (raw, year, title) in _split_rows(path, ",", 3, maxsplit=2):
        raw_id = _parse(path, lineno, int, raw, "movie id")
        year_value = None if year.strip() == "NULL" else _parse(path, lineno, int, year, "year")
        movies[raw_id] = Movie(raw_id, title.strip(), year_value)
    return Ratings(np.array(users), np.array(items), np.array(ratings), np.array(stamps)), movies


def read_flixster(folder: Path) -> tuple[Ratings, dict[int, Movie]]:
    """Flixster as published by Jamali: tab-separated ``ratings.timed.txt`` (``userid movieid
    rating date``) or ``ratings.txt`` (no date: file order stands for time), and
    ``movie-names.txt`` (``moviename`` and ``movieid``, either order, optional header)."""
    timed = folder / "ratings.timed.txt"
    path = timed if timed.is_file() else require_file(folder, "ratings.txt")
    n_fields = 4 if path is timed else 3
    rows = []
    for lineno, fields in _split_rows(path, "\t", n_fields):
        if lineno == 1 and not fields[0].strip().isdigit():
            continue  # header line
        stamp = _unix_day(path, lineno, fields[3]) if n_fields == 4 else lineno
        rows.append(
            (
                _parse(path, lineno, int, fields[0], "userid"),
                _parse(path, lineno, int, fields[1], "movieid"),
                _parse(path, lineno, float, fields[2], "rating"),
                stamp,
            )
        )
    ratings = _to_ratings(rows, path)
    path = require_file(folder, "movie-names.txt")
    movies: dict[int, Movie] = {}
    id_column: int | None = None
    for lineno, fields in _split_rows(path, "\t", 2):
        if lineno == 1 and not any(f.strip().isdigit() for f in fields):
            id_column = next((i for i, f in enumerate(fields) if "id" in f.lower()), None)
            continue
        if id_column is None:
            id_column = 1 if fields[1].strip().isdigit() else 0
        raw_id = _parse(path, lineno, int, fields[id_column], "movieid")
        movies[raw_id] = _movie(raw_id, fields[1 - id_column], ())
    return ratings, movies
