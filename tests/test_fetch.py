"""Fetching datasets: a local HTTP server on 127.0.0.1 stands in for the official sources."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shared.cli import main
from shared.datasets import readers
from shared.datasets.fetch import SOURCE_RECORD, fetch_dataset
from shared.datasets.pair import load_pair
from shared.datasets.registry import Archive, DatasetSpec, get_spec, sha256_file
from shared.errors import ChecksumError, DatasetNotFoundError, FetchError
from tests import upstream_fixtures as fx
from tests.http_fixtures import http_server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output free of the server's access log."""


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving ``root``; yields (base URL, root)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    with http_server(handler) as url:
        yield f"{url}/", root


def _zip_fixture(root: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    folder = fx.ml_csv(tmp_path / "upstream" / "ml-fixture")
    archive = root / "ml-fixture.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.iterdir()):
            zipped.write(path, f"ml-fixture/{path.name}")
        zipped.writestr("ml-fixture/README.txt", "not a dataset file")
        zipped.writestr("../../evil.csv", "path traversal attempt")
    return archive, {p.name: sha256_file(p) for p in folder.iterdir()}


def _spec(url: str, archive_sha: str | None, files: dict[str, str]) -> DatasetSpec:
    return replace(
        get_spec("ml-latest-small"),
        name="ml-fixture",
        archive=Archive(url, archive_sha, "ml-fixture"),
        file_sha256=files,
    )


def test_download_verifies_and_extracts(served, tmp_path: Path) -> None:
    base, root = served
    archive, hashes = _zip_fixture(root, tmp_path)
    spec = _spec(base + archive.name, sha256_file(archive), hashes)
    folder = fetch_dataset(spec, tmp_path / "data")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*hashes, SOURCE_RECORD])
    record = json.loads((folder / SOURCE_RECORD).read_text())
    assert record["origin"] == base + archive.name and record["sha256"] == hashes
    ratings, movies = readers.read_movielens_csv(folder)
    assert len(ratings) == 3 and movies[3].imdb_id == 133093
    assert not (tmp_path / "evil.csv").exists()
    # a second fetch finds the verified copy and downloads nothing
    archive.unlink()
    assert fetch_dataset(spec, tmp_path / "data") == folder


def test_archive_checksum_mismatch_leaves_nothing(served, tmp_path: Path) -> None:
    base, root = served
    archive, hashes = _zip_fixture(root, tmp_path)
    spec = _spec(base + archive.name, "0" * 64, hashes)
    with pytest.raises(ChecksumError, match="does not match the pinned"):
        fetch_dataset(spec, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_file_checksum_mismatch_keeps_the_old_copy(served, tmp_path: Path) -> None:
    base, root = served
    archive, hashes = _zip_fixture(root, tmp_path)
    good = _spec(base + archive.name, None, hashes)
    folder = fetch_dataset(good, tmp_path / "data")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = _spec(base + archive.name, None, {**hashes, "ratings.csv": "f" * 64})
    with pytest.raises(ChecksumError, match=r"ratings\.csv"):
        fetch_dataset(bad, tmp_path / "data", force=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["ml-fixture"]


def test_per_file_download(served, tmp_path: Path) -> None:
    base, root = served
    fx.movietweetings(root / "snapshot")
    files = {n: sha256_file(root / "snapshot" / n) for n in ("movies.dat", "ratings.dat")}
    spec = replace(get_spec("movietweetings-100k"), base_url=base + "snapshot/", file_sha256=files)
    folder = fetch_dataset(spec, tmp_path / "data")
    assert readers.read_movietweetings(folder)[0].item.tolist() == [114709, 133093, 133093]


def test_http_error_is_reported(served, tmp_path: Path) -> None:
    base, _ = served
    spec = _spec(base + "missing.zip", "0" * 64, {})
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dataset(spec, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_offline_message_says_how_to_use_from(tmp_path: Path, capsys, monkeypatch) -> None:
    # a closed port on 127.0.0.1 stands in for "no network"
    closed = "http://127.0.0.1:9/ml-latest-small.zip"
    spec = replace(get_spec("ml-latest-small"), archive=Archive(closed, "0" * 64, "x"))
    monkeypatch.setattr("shared.cli.get_spec", lambda name: spec)
    code = main(["data", "fetch", "ml-latest-small", "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "could not download" in err
    assert "copyattack data fetch ml-latest-small --from DIR" in err
    assert not (tmp_path / "data" / "ml-latest-small").exists()


def test_a_failed_fetch_names_the_folder_and_the_variable(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # the data folder comes from COPYATTACK_DATA_DIR (no --data-dir): a failed fetch says
    # where it looked and where that folder came from
    closed = "http://127.0.0.1:9/ml-latest-small.zip"
    spec = replace(get_spec("ml-latest-small"), archive=Archive(closed, "0" * 64, "x"))
    monkeypatch.setattr("shared.cli.get_spec", lambda name: spec)
    monkeypatch.setenv("COPYATTACK_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["data", "fetch", "ml-latest-small"]) == 2
    err = capsys.readouterr().err
    assert str((tmp_path / "elsewhere" / "ml-latest-small").resolve()) in err
    assert f"$COPYATTACK_DATA_DIR={tmp_path / 'elsewhere'}" in err
    assert "could not download" in err and len(err.strip().splitlines()) == 1
    # not fetching (a missing dataset is an error): the same two names
    monkeypatch.delenv("COPYATTACK_DATA_DIR")
    with pytest.raises(DatasetNotFoundError) as missing:
        load_pair("ml-latest-small", "movietweetings-100k", tmp_path / "empty")
    assert str((tmp_path / "empty" / "ml-latest-small").resolve()) in str(missing.value)
    assert "$COPYATTACK_DATA_DIR (unset), else ./data" in str(missing.value)


def test_no_pinned_checksum_means_no_blind_download(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="--from"):
        fetch_dataset(get_spec("netflix"), tmp_path)


def test_from_local_folder_and_archive(tmp_path: Path) -> None:
    fx.netflix(tmp_path / "netflix-download")
    folder = fetch_dataset(
        get_spec("netflix"), tmp_path / "data", from_path=tmp_path / "netflix-download"
    )
    assert sorted(p.name for p in folder.glob("*.txt")) == [
        "combined_data_1.txt",
        "combined_data_2.txt",
    ]
    archive = tmp_path / "flix.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in fx.flixster(tmp_path / "flix").iterdir():
            zipped.write(path, f"flixster/{path.name}")
    folder = fetch_dataset(get_spec("flixster"), tmp_path / "data", from_path=archive)
    assert (folder / "movie-names.txt").is_file()


def test_from_folder_without_the_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds none of"):
        fetch_dataset(get_spec("ml-1m"), tmp_path / "data", from_path=tmp_path / "empty")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.realdata
def test_from_real_copy_checks_pinned_sha256(real_data_dir: Path, tmp_path: Path) -> None:
    source = real_data_dir / "movietweetings-100k"
    folder = fetch_dataset(get_spec("movietweetings-100k"), tmp_path / "data", from_path=source)
    assert (
        sha256_file(folder / "ratings.dat")
        == get_spec("movietweetings-100k").file_sha256["ratings.dat"]
    )
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in source.iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    with open(tampered / "ratings.dat", "ab") as handle:
        handle.write(b"99999::0114709::9::1365029107\n")
    with pytest.raises(ChecksumError):
        fetch_dataset(get_spec("movietweetings-100k"), tmp_path / "d2", from_path=tampered)
    assert list((tmp_path / "d2").iterdir()) == []
    assert hashlib.sha256((source / "ratings.dat").read_bytes()).hexdigest() != sha256_file(
        tampered / "ratings.dat"
    )
