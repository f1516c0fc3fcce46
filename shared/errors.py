"""Every error the data pipeline raises on bad input, in one place.

The CLI turns a :class:`CopyAttackError` into a one-line message and exit code 2;
anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class CopyAttackError(Exception):
    """Base class: an error caused by input or environment, with a message for the user."""


class DataFormatError(CopyAttackError):
    """A data file does not have the format its reader expects."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(CopyAttackError):
    """A dataset's files are missing from the data directory."""


class UnknownDatasetError(CopyAttackError):
    """A dataset name that the registry does not know."""


class FetchError(CopyAttackError):
    """A download failed (network, HTTP status, no official source)."""


class ChecksumError(FetchError):
    """A downloaded or copied file does not have its pinned sha256."""


class EmptyResultError(CopyAttackError):
    """Filtering left nothing to work with (no interactions, no overlap, no target items)."""


class ScenarioError(CopyAttackError):
    """A scenario directory is missing, incomplete or built from other data."""
