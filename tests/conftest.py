from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.datasets.pair import load_pair
from shared.datasets.types import Dataset

PRIMARY = ("movietweetings-100k", "ml-latest-small")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real datasets. CI must have them: there a missing folder fails the run."""
    folder = Path(os.environ.get("COPYATTACK_DATA_DIR", "data"))
    if not (folder / PRIMARY[0]).is_dir() or not (folder / PRIMARY[1]).is_dir():
        message = f"real data not found in {folder.resolve()} (set COPYATTACK_DATA_DIR)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def primary_pair(real_data_dir: Path) -> tuple[Dataset, Dataset]:
    return load_pair(*PRIMARY, real_data_dir)


@pytest.fixture(scope="session")
def tiny_pair() -> tuple[Dataset, Dataset]:
    return load_pair("synthetic:tiny", "synthetic:tiny", Path("unused"))
