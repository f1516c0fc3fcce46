"""The datasets the simulator knows by name: their reader, files, rating scale and source.

Checksums are pinned only where they could be checked: per file for the two platforms
shipped with the project's development data, per archive for the MovieLens zips whose
sha256 is published alongside widely used loaders. A dataset with no pinned checksum
is never downloaded blind; it is read from a local copy (``fetch --from``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from shared.datasets import readers
from shared.datasets.types import Dataset
from shared.errors import DatasetNotFoundError, UnknownDatasetError

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_MOVIETWEETINGS = "https://raw.githubusercontent.com/sidooms/MovieTweetings/master/snapshots/100K/"
_MOVIELENS_CITATION = (
    'F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets: History and Context", '
    "ACM TiiS 5(4), 2015"
)
_MOVIELENS_TERMS = "research use only; no commercial use without permission (see its README)"


@dataclass(frozen=True)
class Archive:
    """A zip archive at ``url`` whose files sit in ``folder`` inside it."""

    url: str
    sha256: str | None
    folder: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: readers.Reader
    # glob patterns of the files the reader needs, relative to the dataset folder
    files: tuple[str, ...]
    rating_max: float
    # default "liked" threshold: a rating >= this is an implicit interaction
    like_threshold: float
    citation: str
    terms: str
    archive: Archive | None = None
    # the files themselves at base_url + name (when there is no archive)
    base_url: str | None = None
    file_sha256: Mapping[str, str] = field(default_factory=dict)
    # where a user gets the files when no download is possible
    homepage: str = ""

    @property
    def downloadable(self) -> bool:
        """True when a download can be verified against a pinned checksum."""
        if self.archive is not None:
            return self.archive.sha256 is not None or bool(self.file_sha256)
        return self.base_url is not None and bool(self.file_sha256)


def _movielens(
    name: str, reader: readers.Reader, files: tuple[str, ...], sha256: str | None, folder: str
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        reader=reader,
        files=files,
        rating_max=5.0,
        like_threshold=4.0,
        citation=_MOVIELENS_CITATION,
        terms=_MOVIELENS_TERMS,
        archive=Archive(f"{_GROUPLENS}{name}.zip", sha256, folder),
        homepage="https://grouplens.org/datasets/movielens/",
    )


# As listed in the development data's README (the files as published upstream).
_ML_LATEST_SMALL_SHA256 = MappingProxyType(
    {
        "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
        "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    }
)
_MOVIETWEETINGS_100K_SHA256 = MappingProxyType(
    {
        "movies.dat": "e63fb84bc734e3c574f135634a40d3cbafab22b8f94f5fc0b80f80d1d2076efc",
        "ratings.dat": "c0dd868c2632d10002ebc928ddc5345f33adeaa59eca52c2941c26a2c5e36fd6",
    }
)
_CSV_FILES = ("ratings.csv", "movies.csv", "links.csv")
_DAT_FILES = ("ratings.dat", "movies.dat")

_SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _movielens(
            "ml-100k",
            readers.read_movielens_100k,
            ("u.data", "u.item"),
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            "ml-100k",
        ),
        _movielens(
            "ml-1m",
            readers.read_movielens_dat,
            _DAT_FILES,
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            "ml-1m",
        ),
        _movielens("ml-10m", readers.read_movielens_dat, _DAT_FILES, None, "ml-10M100K"),
        _movielens(
            "ml-20m",
            readers.read_movielens_csv,
            _CSV_FILES,
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            "ml-20m",
        ),
        _movielens("ml-latest", readers.read_movielens_csv, _CSV_FILES, None, "ml-latest"),
        DatasetSpec(
            name="ml-latest-small",
            reader=readers.read_movielens_csv,
            files=_CSV_FILES,
            rating_max=5.0,
            like_threshold=4.0,
            citation=_MOVIELENS_CITATION,
            terms=_MOVIELENS_TERMS,
            archive=Archive(
                f"{_GROUPLENS}ml-latest-small.zip",
                "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
                "ml-latest-small",
            ),
            file_sha256=_ML_LATEST_SMALL_SHA256,
            homepage="https://grouplens.org/datasets/movielens/",
        ),
        DatasetSpec(
            name="movietweetings-100k",
            reader=readers.read_movietweetings,
            files=_DAT_FILES,
            rating_max=10.0,
            like_threshold=8.0,
            citation=(
                'S. Dooms, T. De Pessemier, L. Martens, "MovieTweetings: a Movie Rating Dataset '
                'Collected From Twitter", CrowdRec workshop at RecSys 2013'
            ),
            terms="see the MovieTweetings repository; users.dat (Twitter ids) is not used",
            base_url=_MOVIETWEETINGS,
            file_sha256=_MOVIETWEETINGS_100K_SHA256,
            homepage="https://github.com/sidooms/MovieTweetings",
        ),
        DatasetSpec(
            name="netflix",
            reader=readers.read_netflix,
            files=("combined_data_*.txt", "movie_titles.csv"),
            rating_max=5.0,
            like_threshold=4.0,
            citation='J. Bennett and S. Lanning, "The Netflix Prize", KDD Cup 2007',
            terms="Netflix Prize rules: non-commercial research use",
            homepage="the Netflix Prize data as redistributed on Kaggle (login required)",
        ),
        DatasetSpec(
            name="flixster",
            reader=readers.read_flixster,
            files=("ratings*.txt", "movie-names.txt"),
            rating_max=5.0,
            like_threshold=4.0,
            citation=(
                'M. Jamali and M. Ester, "A matrix factorization technique with trust '
                'propagation for recommendation in social networks", RecSys 2010'
            ),
            terms="research use, as published by M. Jamali",
            homepage="M. Jamali's Flixster page (sites.google.com/view/mohsenjamali)",
        ),
    )
}


DATA_DIR_VARIABLE = "COPYATTACK_DATA_DIR"


def data_dir_origin() -> str:
    """Where the data folder came from, for messages about files not found in it."""
    value = os.environ.get(DATA_DIR_VARIABLE)
    variable = (
        f"${DATA_DIR_VARIABLE}={value}" if value else f"${DATA_DIR_VARIABLE} (unset), else ./data"
    )
    return f"data folder: --data-dir, else {variable}"


def dataset_names() -> list[str]:
    return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return _SPECS[name]
    except KeyError:
        known = ", ".join(dataset_names())
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {known}, synthetic[:PRESET]"
        ) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(spec: DatasetSpec, folder: Path) -> list[Path]:
    """The files of ``spec`` present in ``folder``; raises if a pattern matches nothing."""
    found: list[Path] = []
    missing: list[str] = []
    for pattern in spec.files:
        matches = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not matches:
            missing.append(pattern)
        found.extend(matches)
    if missing:
        raise DatasetNotFoundError(
            f"dataset {spec.name}: missing {', '.join(missing)} in {folder.resolve()} "
            f"({data_dir_origin()}); run `copyattack data fetch {spec.name} --data-dir "
            f"{folder.parent}`"
        )
    return found


def load_dataset(name: str, data_dir: Path, like_threshold: float | None = None) -> Dataset:
    """Read a registered dataset from ``data_dir/name`` and fingerprint the files read."""
    spec = get_spec(name)
    folder = Path(data_dir) / name
    files = dataset_files(spec, folder)
    ratings, movies = spec.reader(folder)
    return Dataset(
        name=name,
        ratings=ratings,
        movies=movies,
        rating_max=spec.rating_max,
        like_threshold=spec.like_threshold if like_threshold is None else like_threshold,
        fingerprint={f"{name}/{p.name}": sha256_file(p) for p in files},
    )
