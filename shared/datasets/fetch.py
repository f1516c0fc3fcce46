"""Get a dataset's files into ``DATA_DIR/NAME``: downloaded from the official source, or
copied from a local folder or archive (``--from``), verified by sha256 either way.

Everything is written to a temporary folder beside the destination and moved into place
in one rename (:func:`shared.atomic.staged_directory`), so a failed or interrupted fetch
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
import zipfile
from fnmatch import fnmatch
from pathlib import Path

from shared.atomic import staged_directory
from shared.datasets.registry import DatasetSpec, data_dir_origin, dataset_files, sha256_file
from shared.errors import ChecksumError, DatasetNotFoundError, FetchError

SOURCE_RECORD = "SOURCE.json"
_TIMEOUT_SECONDS = 60


def fetch_dataset(
    spec: DatasetSpec, data_dir: Path, *, from_path: Path | None = None, force: bool = False
) -> Path:
    """Make ``data_dir/spec.name`` hold the dataset's verified files; return that folder."""
    destination = Path(data_dir) / spec.name
    if destination.exists() and not force:
        verify_files(spec, destination)
        return destination
    with staged_directory(destination, replace=True) as staging:
        if from_path is not None:
            origin = _copy_local(spec, Path(from_path), staging)
        else:
            try:
                origin = _download(spec, staging)
            except FetchError as exc:
                raise type(exc)(
                    f"dataset {spec.name} is not in {destination.resolve()} "
                    f"({data_dir_origin()}), and fetching it failed: {exc}"
                ) from None
        hashes = verify_files(spec, staging)
        record = {"dataset": spec.name, "origin": origin, "sha256": hashes}
        (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return destination


def verify_files(spec: DatasetSpec, folder: Path) -> dict[str, str]:
    """sha256 of every dataset file in ``folder``; raises on a missing file or pinned mismatch."""
    hashes = {path.name: sha256_file(path) for path in dataset_files(spec, folder)}
    for name, expected in spec.file_sha256.items():
        if name not in hashes:
            raise DatasetNotFoundError(f"dataset {spec.name}: missing {name} in {folder}")
        if hashes[name] != expected:
            raise ChecksumError(
                f"{folder / name}: sha256 {hashes[name]} does not match the pinned {expected}"
            )
    return hashes


def _wanted(spec: DatasetSpec, name: str) -> bool:
    return any(fnmatch(name, pattern) for pattern in spec.files)


def _copy_local(spec: DatasetSpec, source: Path, staging: Path) -> str:
    if source.is_dir():
        copied = [p for p in sorted(source.iterdir()) if p.is_file() and _wanted(spec, p.name)]
        if not copied:
            raise DatasetNotFoundError(
                f"{source} holds none of {', '.join(spec.files)} for dataset {spec.name}"
            )
        for path in copied:
            shutil.copyfile(path, staging / path.name)
        return f"copy of {source.resolve()}"
    if source.is_file() and zipfile.is_zipfile(source):
        if spec.archive is not None and spec.archive.sha256 is not None:
            _check_sha256(source, sha256_file(source), spec.archive.sha256)
        _extract(spec, source, staging)
        return f"archive {source.resolve()}"
    raise DatasetNotFoundError(f"--from {source}: not a folder or a zip archive")


def _download(spec: DatasetSpec, staging: Path) -> str:
    if not spec.downloadable:
        where = spec.archive.url if spec.archive else spec.homepage
        raise FetchError(
            f"dataset {spec.name} has no official download with a pinned checksum; get its "
            f"files from {where} and run `copyattack data fetch {spec.name} --from DIR`"
        )
    if spec.archive is not None:
        archive = staging / "download.zip"
        digest = _http_get(spec, spec.archive.url, archive)
        if spec.archive.sha256 is not None:
            _check_sha256(archive, digest, spec.archive.sha256)
        _extract(spec, archive, staging)
        archive.unlink()
        return spec.archive.url
    assert spec.base_url is not None
    for name in spec.file_sha256:
        _http_get(spec, spec.base_url + name, staging / name)
    return spec.base_url


def _http_get(spec: DatasetSpec, url: str, target: Path) -> str:
    """Stream ``url`` into ``target``; return its sha256."""
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response,
            open(target, "wb") as out,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"could not download {url} ({reason}). Without network access, copy the files "
            f"from a machine that has it and run `copyattack data fetch {spec.name} "
            f"--from DIR` (DIR: the unpacked folder or the downloaded archive)"
        ) from None
    return digest.hexdigest()


def _check_sha256(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise ChecksumError(f"{path.name}: sha256 {actual} does not match the pinned {expected}")


def _extract(spec: DatasetSpec, archive: Path, staging: Path) -> None:
    """Copy the dataset's files out of the archive, flattened (no member path is trusted)."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            name = Path(member.filename).name
            if member.is_dir() or not _wanted(spec, name):
                continue
            with zipped.open(member) as src, open(staging / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
