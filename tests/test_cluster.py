"""Table 2 on a local Ray cluster of two server replicas: the same cells as on one
server (each cell runs in its own world, seeded), a run resumed across the two, and a
run whose replicas are killed mid-run finishing with the same cells (the lost ones
queued again)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import ray

from attacker_client.cli import main as copyattack_main
from attacker_client.cluster import RayPool, RayServers
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.harness import (
    Cell,
    Experiment,
    ExperimentConfig,
    Record,
    run_table2,
)
from attacker_client.results import CellResult, read_cells
from shared.errors import CopyAttackError
from shared.process import ServerProcess
from shared.scenario import AttackerView
from tests.service_fixtures import ADMIN_TOKEN

METHODS = ("WithoutAttack", "RandomAttack", "TargetAttack70", "CopyAttack")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (its start costs seconds), never a cluster that may
    run on this machine. Its workers run at the tests' priority: Ray starts them at nice
    15, where any other job on the machine starves them (minutes a test beside probes)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_worker_niceness", "0")
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
        yield
        ray.shutdown()


def config_of(scenario: Path, server: str, out: Path) -> ExperimentConfig:
    return ExperimentConfig(
        server=server,
        admin_token=ADMIN_TOKEN,
        scenario=scenario,
        out=out,
        methods=METHODS,
        targets=2,
        budget=6,
        pretend_users=10,
        concurrency=2,
        checkpoint_every=3,
        attack=CopyAttackArgs(episodes=1, k=20),
    )


def numbers(out: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Each cell of a run by its key, less its wall time (the one field that varies)."""
    cells = read_cells(out / "cells.jsonl")
    keyed = {c.key: c for c in cells}
    assert len(keyed) == len(cells)  # no cell recorded twice
    return {key: c.model_dump(exclude={"seconds"}) for key, c in keyed.items()}


@pytest.fixture(scope="module")
def reference(
    scenario_dir: Path, server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The run on the session's one server."""
    out = tmp_path_factory.mktemp("one-server")
    asyncio.run(run_table2(config_of(scenario_dir, server.url, out)))
    return out


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    # no such file: reaped before the open; ESRCH on the read: reaped between the two
    except (FileNotFoundError, ProcessLookupError):
        return True


@dataclasses.dataclass
class KillAtFirstCell:
    """The replicas, with every replica (``victim`` "replica_pid") or every actor ("pid")
    SIGKILLed when the first cell of the run is recorded: the slot that recorded it sends
    its next cell to a dead replica (or a dead or restarting actor), and the other cells
    in flight die with theirs."""

    servers: RayServers
    victim: str = "replica_pid"
    pools: list[RayPool] = dataclasses.field(default_factory=list)

    @asynccontextmanager
    async def session(self, config: ExperimentConfig, view: AttackerView) -> AsyncIterator[Any]:
        async with self.servers.session(config, view) as pool:
            self.pools.append(pool)
            yield self

    @property
    def model(self) -> Any:
        return self.pools[-1].model

    async def run(self, experiment: Experiment, cells: Sequence[Cell], record: Record) -> None:
        killed = False

        def record_then_kill(result: CellResult) -> None:
            nonlocal killed
            record(result)
            if not killed:
                killed = True
                places = ray.get([a.where.remote() for a in self.servers.actors])
                for place in places:
                    os.kill(place[self.victim], signal.SIGKILL)
                for place in places:
                    while not _gone(place[self.victim]):
                        os.sched_yield()

        await self.pools[-1].run(experiment, cells, record_then_kill)


def test_replicas_killed_mid_run_lose_only_their_cells_in_flight(
    local_ray: None, scenario_dir: Path, artifact: Path, reference: Path, tmp_path: Path
) -> None:
    with RayServers(artifact, replicas=2).started() as servers:
        killing = KillAtFirstCell(servers)
        asyncio.run(run_table2(config_of(scenario_dir, "ray:auto", tmp_path), killing))
        places = ray.get([a.where.remote() for a in servers.actors])
    # two actors, each with a server process of its own
    assert len({p["pid"] for p in places}) == len({p["replica_pid"] for p in places}) == 2
    starts = [p["starts"] for p in places]
    lost = killing.pools[0].lost
    assert lost  # the cells in flight on the dead replicas, queued again
    assert max(starts) == 2  # a replica was started anew, once
    assert numbers(tmp_path) == numbers(reference)


def test_actors_killed_mid_run_are_restarted_and_their_cells_run_again(
    local_ray: None, scenario_dir: Path, artifact: Path, reference: Path, tmp_path: Path
) -> None:
    with RayServers(artifact, replicas=2).started() as servers:
        before = ray.get([a.where.remote() for a in servers.actors])
        killing = KillAtFirstCell(servers, victim="pid")
        asyncio.run(run_table2(config_of(scenario_dir, "ray:auto", tmp_path), killing))
        after = ray.get([a.where.remote() for a in servers.actors])
    # Ray restarted each actor, whose constructor started a replica of its own
    assert not {p["pid"] for p in before} & {p["pid"] for p in after}
    assert not {p["replica_pid"] for p in before} & {p["replica_pid"] for p in after}
    assert numbers(tmp_path) == numbers(reference)


def test_two_replicas_give_the_cells_of_one_server_and_resume_its_run(
    local_ray: None,
    scenario_dir: Path,
    artifact: Path,
    reference: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["experiment", "table2", "--scenario", str(scenario_dir), "--out", str(tmp_path)]
    assert copyattack_main([*base, "--ray"]) == 2
    assert "--ray needs --artifact" in capsys.readouterr().err
    assert copyattack_main([*base, "--ray", "--artifact", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert copyattack_main([*base, "--ray", "--artifact", str(artifact), "--replicas", "3"]) == 2
    assert "3 replicas need 3 CPUs; the cluster has 2" in capsys.readouterr().err
    with pytest.raises(CopyAttackError, match="--replicas must be at least 1"):
        RayServers(artifact, replicas=0)
    expected = numbers(reference)
    assert len(expected) == 2 * len(METHODS)
    # a run begun on one server (its first 3 cells) is finished on the replicas
    shutil.copy(reference / "run.json", tmp_path / "run.json")
    begun = (reference / "cells.jsonl").read_text().splitlines(keepends=True)[:3]
    (tmp_path / "cells.jsonl").write_text("".join(begun))
    settings = ["--methods", *METHODS, "--targets", "2", "--budget", "6", "--pretend-users",
                "10", "--concurrency", "2", "--checkpoint-every", "3", "--k", "20",
                "--episodes", "1"]  # fmt: skip
    assert copyattack_main([*base, *settings, "--ray", "--artifact", str(artifact)]) == 0
    assert "ray: 2 replicas of " in capsys.readouterr().err
    assert numbers(tmp_path) == expected
    assert (tmp_path / "cells.jsonl").read_text().startswith("".join(begun))  # appended to
    written = json.loads((tmp_path / "table2.json").read_text())
    assert written["config"]["server"] == "ray:auto"
    assert written["methods"]["CopyAttack"]["cells"] == 2
    # the same run key: the same model, by its fingerprint, and the same settings
    assert json.loads((tmp_path / "run.json").read_text()) == json.loads(
        (reference / "run.json").read_text()
    )


def test_without_ray_nothing_imports_it_and_asking_for_it_says_how_to_install() -> None:
    code = (
        "import sys, attacker_client.cli, attacker_client.harness; sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    # a base install without the extra: the import fails, the message names the extra
    shadow = f"import sys; sys.modules['ray'] = None; {IMPORT_RAY}"
    done = subprocess.run([sys.executable, "-c", shadow], capture_output=True, text=True)
    assert done.returncode == 1 and "pip install -e '.[ray]'" in done.stderr


IMPORT_RAY = "from attacker_client.cluster import import_ray; import_ray()"
