from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.datasets.pair import load_pair
from shared.datasets.types import Dataset
from shared.process import ServerProcess
from shared.scenario import save_scenario
from tests.pinsage_fixtures import tiny_scenario
from tests.service_fixtures import NO_RATE_LIMIT, tiny_server, write_tiny_artifact

PRIMARY = ("movietweetings-100k", "ml-latest-small")

# `make test-fast`, the edit loop, leaves out what starts processes, trains on real data or
# runs an experiment end to end; `make test` (CI) runs everything. Marked here, by module,
# fixture and parameter, so that a new test in one of these places is marked without a
# decorator of its own.
PROCESS_MODULES = frozenset(
    {
        "test_cluster",
        "test_demo",
        "test_docs_offline",
        "test_loadtest",
        "test_malformed_http",
        "test_notebook",
        "test_retrains",
        "test_service_process",
        "test_tied_children",
    }
)
SLOW_MODULES = frozenset(
    {
        "test_harness",
        "test_pretrain",
        "test_probe",
        "test_stealth",
        "test_pinsage_refresh",
        "test_lightgcn_refresh",
        "test_itemknn_refresh",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        fixtures = getattr(item, "fixturenames", ())
        if "real_data_dir" in fixtures:
            item.add_marker(pytest.mark.realdata)
        # a real server process: the shared one, or a service test's uvicorn variant
        if module in PROCESS_MODULES or "server" in fixtures or "[uvicorn" in item.nodeid:
            item.add_marker(pytest.mark.process)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic scenario, saved: what an attacker loads its view from."""
    folder = tmp_path_factory.mktemp("scenario") / "tiny"
    save_scenario(tiny_scenario(), folder)
    return folder


@pytest.fixture(scope="session")
def artifact(scenario_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model of ``scenario_dir`` with its serving data, trained once for
    every service, SDK, harness, notebook and load test."""
    return write_tiny_artifact(tmp_path_factory.mktemp("model") / "tiny.pt", scenario_dir)


@pytest.fixture(scope="session")
def server(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``recsys-server serve`` on the tiny model, shared by the tests that need a process."""
    ledger = tmp_path_factory.mktemp("ledger") / "l.db"
    process = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    yield process
    process.stop()
