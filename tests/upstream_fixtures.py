"""Small files in the exact upstream formats, written by the tests that read them."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def ml100k(folder: Path) -> Path:
    # u.data is tab-separated; u.item is pipe-separated with 19 genre flags, Latin-1
    write(
        folder / "u.data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250900\n",
    )
    flags_242 = "0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0"  # Comedy
    flags_302 = "0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0"  # Crime, Film-Noir, Mystery, Thriller
    write(
        folder / "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags_242}\n"
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/x|{flags_302}\n",
        encoding="latin-1",
    )
    return folder


def ml_dat(folder: Path, encoding: str = "latin-1") -> Path:
    write(
        folder / "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n",
    )
    write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n",
        encoding=encoding,
    )
    return folder


def ml_csv(folder: Path) -> Path:
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,2.5,964981247\n2,1,5.0,964982224\n",
    )
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '2,"Seven (a.k.a. Se7en) (1995)",Mystery|Thriller\n'
        '3,"Matrix, The (1999)",Action|Sci-Fi|Thriller\n'
        "4,Some Unknown Film,(no genres listed)\n",
    )
    write(
        folder / "links.csv",
        "movieId,imdbId,tmdbId\n1,0114709,862\n2,0114369,807\n3,0133093,\n4,,\n",
    )
    return folder


def movietweetings(folder: Path) -> Path:
    write(
        folder / "ratings.dat",
        "1::0114709::9::1365029107\n1::0133093::7::1366576639\n2::0133093::10::1364690142\n",
    )
    write(
        folder / "movies.dat",
        "0114709::Toy Story (1995)::Animation|Adventure|Comedy\n"
        "0133093::The Matrix (1999)::Action|Sci-Fi\n"
        "0021283::Rakudai wa shitakeredo (1930)::\n",
    )
    return folder


def netflix(folder: Path) -> Path:
    write(folder / "combined_data_1.txt", "1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n")
    write(folder / "combined_data_2.txt", "2:\n1488844,4,2005-09-07\n")
    write(
        folder / "movie_titles.csv",
        "1,2003,Dinosaur Planet\n2,NULL,Isle of Man TT 2004 Review\n3,1997,Character, The Sequel\n",
        encoding="latin-1",
    )
    return folder


def flixster(folder: Path, *, utf16: bool = True) -> Path:
    # Jamali's ratings.timed.txt is UTF-16 with a header line
    write(
        folder / "ratings.timed.txt",
        "userid\tmovieid\trating\tdate\n1\t10\t4.5\t2005-12-30 00:00:00\n2\t11\t1.0\t2007-01-02\n",
        encoding="utf-16" if utf16 else "utf-8",
    )
    write(folder / "movie-names.txt", "moviename\tmovieid\nThe Matrix\t10\nAmélie\t11\n")
    return folder
