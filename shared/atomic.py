"""Write a whole folder or nothing: build it beside its destination, then rename it in place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import CopyAttackError

# mkstemp and mkdtemp create 0600 / 0700 entries, which would hide scenarios, models and
# results from the other users of a machine (or a container running as another user);
# staged entries get what open() and mkdir() would give. Read once: os.umask can only be
# read by setting it, which is not safe while other threads create files.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIRECTORY_MODE = 0o777 & ~_UMASK


@contextmanager
def staged_directory(destination: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``destination`` in one rename.

    On any error the staging folder is removed and an existing ``destination`` is untouched.
    """
    destination = Path(destination)
    if destination.exists() and not replace:
        raise CopyAttackError(f"{destination} already exists; pass --force to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        staging.chmod(DIRECTORY_MODE)
        yield staging
        _move_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, destination: Path) -> None:
    if not destination.exists():
        staging.rename(destination)
        return
    retired = destination.with_name(f".{destination.name}.old-{staging.name}")
    destination.rename(retired)
    try:
        staging.rename(destination)
    except BaseException:
        retired.rename(destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staged_file(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it replaces ``destination``
    in one rename, so readers see the old file or the whole new one, never a torn one."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(handle)
    try:
        os.chmod(temporary, FILE_MODE)
        yield Path(temporary)
        # on disk before it is renamed into place, so a power cut leaves the old file or
        # the whole new one (as cells.jsonl is fsynced per line)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(destination: Path, text: str) -> None:
    """``text`` as given: no newline translation, so CSV's \\r\\n stays as it is everywhere."""
    with staged_file(destination) as staging:
        staging.write_text(text, newline="")
