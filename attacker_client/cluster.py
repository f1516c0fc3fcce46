"""Table 2 and the sweeps on a Ray cluster: one ``recsys-server serve`` replica per actor.

Each actor (:class:`Replica`) writes the artifact it was shipped through Ray's object
store into a folder of its own, checks its sha256, and starts ``recsys-server serve`` on
it on 127.0.0.1 of its node, with a fresh ledger and an admin token of its own. It runs
the cells it is given exactly as the single-server path does (:meth:`Experiment.run_cell`
through the SDK, over HTTP to its replica). The driver (:class:`RayServers`) keeps
``concurrency`` cells in flight per replica and hands each result to the harness, which
appends it to ``cells.jsonl`` as on one server.

A replica that dies (its process killed, out of memory) costs only the cells in flight
on it: the actor starts a new replica and reports those cells lost; the driver queues
them again. An actor that dies is restarted by Ray (``max_restarts``), which starts a new
replica in its constructor; its cells in flight are queued again too. A cell lost
``MAX_ATTEMPTS`` times fails the run (something kills every replica it runs on).

Ray is imported only here, and only when ``--ray`` is given: the base install has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import pickle
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacker_client._client import AsyncAdminClient
from attacker_client.attack import require_scenario_of
from attacker_client.harness import Cell, Experiment, ExperimentConfig, Record
from attacker_client.results import CellResult
from shared.errors import CopyAttackError
from shared.process import ServerProcess
from shared.scenario import AttackerView
from shared.schemas import ModelInfo

# a cell lost this many times (each time its replica or actor died under it) fails the run
MAX_ATTEMPTS = 3
# Ray restarts an actor that died this many times; then its cells go to the others
ACTOR_RESTARTS = 3
# how often an actor being restarted is asked whether it is back
RESTART_POLL_SECONDS = 0.5
# a replica's start (imports, model load) on a node that may be loaded by other work
REPLICA_START_SECONDS = 600.0
# how long a replica that failed a cell is given to be seen dead before the failure is
# taken as the cell's own error (a killed process closes its sockets before it is reaped)
DEATH_GRACE_SECONDS = 5.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise CopyAttackError(
            "--ray needs Ray, an optional extra: pip install -e '.[ray]'"
        ) from None
    return ray


@dataclass(frozen=True)
class Lost:
    """A cell that did not finish because its replica or actor died."""

    reason: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Replica:
    """A Ray actor (made one by :class:`RayServers`): one server replica and the cells it
    is given. Its constructor starts the replica, so an actor Ray restarts has one too."""

    def __init__(self, artifact: bytes, artifact_sha256: str) -> None:
        if sha256_bytes(artifact) != artifact_sha256:
            raise CopyAttackError("the artifact arrived altered (its sha256 differs)")
        self._folder = Path(tempfile.mkdtemp(prefix="copyattack-replica-"))
        self._artifact = self._folder / "model.pt"
        self._artifact.write_bytes(artifact)
        self._token = secrets.token_urlsafe(32)
        self.starts = 0
        self._server = self._start()
        self._admin: tuple[ServerProcess, AsyncAdminClient] | None = None
        self._experiment: tuple[str, Experiment] | None = None
        self._restarting: asyncio.Lock | None = None

    def _start(self) -> ServerProcess:
        # a fresh ledger in a temporary folder, deleted by the server when it ends
        server = ServerProcess(self._artifact, None, admin_token=self._token)
        server.start(timeout=REPLICA_START_SECONDS)
        self.starts += 1
        return server

    async def _admin_of(self, server: ServerProcess) -> AsyncAdminClient:
        # made in the actor's event loop (its constructor runs outside it)
        if self._admin is None or self._admin[0] is not server:
            if self._admin is not None:
                await self._admin[1].aclose()
            self._admin = (server, AsyncAdminClient(server.url, self._token, timeout=600))
        return self._admin[1]

    async def model_info(self) -> ModelInfo:
        return await (await self._admin_of(self._server)).model_info()

    def where(self) -> dict[str, Any]:
        """The node, the actor's and its replica's pids, and how many replicas it started."""
        assert self._server.process is not None
        return {
            "node": import_ray().get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "replica_pid": self._server.process.pid,
            "starts": self.starts,
        }

    async def run_cell(self, key: str, box: list[Any], cell: Cell) -> CellResult | Lost:
        """Run one cell on the replica; :class:`Lost` if the replica died meanwhile (then a
        new one is started). ``box`` holds the run's :class:`Experiment` in the object
        store, fetched once per run (``key``)."""
        if self._experiment is None or self._experiment[0] != key:
            # unpickled here, not by Ray: Ray's zero-copy numpy arrays are read-only
            self._experiment = (key, pickle.loads(await box[0]))
        server = self._server
        admin = await self._admin_of(server)
        config = dataclasses.replace(
            self._experiment[1].config, server=server.url, admin_token=self._token
        )
        experiment = dataclasses.replace(self._experiment[1], config=config)
        try:
            return await experiment.run_cell(admin, *cell)
        except Exception as exc:
            if not await asyncio.to_thread(_dies, server):
                raise
            await self._replace(server)
            return Lost(f"its replica died ({type(exc).__name__}: {exc})")

    async def _replace(self, dead: ServerProcess) -> None:
        """A new replica for a dead one, once however many cells saw it die."""
        self._restarting = self._restarting or asyncio.Lock()
        async with self._restarting:
            if self._server is dead:
                dead.stop()  # reaps it and deletes its scratch folder
                self._server = await asyncio.to_thread(self._start)

    def stop(self) -> None:
        self._server.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def _dies(server: ServerProcess) -> bool:
    """Whether ``server``'s process is dead, or dies within the grace period."""
    assert server.process is not None
    try:
        server.process.wait(timeout=DEATH_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        return False
    return True


async def _comes_back(ray: Any, actor: Any) -> bool:
    """Whether an actor that died is restarted by Ray (False: its restarts are spent)."""
    while True:
        try:
            await actor.where.remote()
            return True
        except ray.exceptions.ActorUnavailableError:  # restarting (its replica starting)
            await asyncio.sleep(RESTART_POLL_SECONDS)
        except ray.exceptions.RayActorError:
            return False


@dataclass
class RayPool:
    """The replicas, open for one run."""

    actors: list[Any]
    model: ModelInfo
    lost: list[Cell] = field(default_factory=list)  # cells queued again, in the order lost
    driver_cpu_seconds: float = 0.0  # of the last run

    async def run(self, experiment: Experiment, cells: Sequence[Cell], record: Record) -> None:
        ray = import_ray()
        # in a list: passed as a reference, fetched once per actor
        box = [ray.put(pickle.dumps(experiment))]
        key = box[0].hex()
        queue = deque(cells)
        attempts: Counter[Cell] = Counter()
        gone: set[int] = set()  # actors dead for good (their restarts spent)

        async def slot(index: int) -> None:
            actor = self.actors[index]
            while queue and index not in gone:
                cell = queue.popleft()
                try:
                    outcome = await actor.run_cell.remote(key, box, cell)
                except ray.exceptions.RayActorError as exc:
                    outcome = Lost(f"its actor died ({exc})")
                    if not await _comes_back(ray, actor):
                        gone.add(index)
                if isinstance(outcome, Lost):
                    attempts[cell] += 1
                    if attempts[cell] >= MAX_ATTEMPTS:
                        raise CopyAttackError(
                            f"cell {cell} was lost {attempts[cell]} times; the last: "
                            f"{outcome.reason}"
                        )
                    print(f"ray: cell {cell} lost ({outcome.reason}); queued again",
                          file=sys.stderr, flush=True)  # fmt: skip
                    self.lost.append(cell)
                    queue.append(cell)
                    continue
                record(outcome)

        concurrency = experiment.config.concurrency
        started, cpu = time.perf_counter(), time.process_time()
        while queue:
            # a slot ends when the queue is empty or its actor is gone for good; a cell
            # queued again after the others ended goes to the actors still alive
            alive = [i for i in range(len(self.actors)) if i not in gone]
            if not alive:
                raise CopyAttackError(f"every actor died; {len(queue)} cells were left to run")
            await asyncio.gather(*(slot(i) for i in alive for _ in range(concurrency)))
        # what the driver costs per cell: one of the limits of scaling out
        self.driver_cpu_seconds = round(time.process_time() - cpu, 2)
        wall = time.perf_counter() - started
        print(f"ray: {len(cells)} cells on {len(self.actors)} replicas in {wall:.1f} s "
              f"({3600 * len(cells) / max(wall, 1e-9):.0f} cells/h); driver CPU "
              f"{self.driver_cpu_seconds} s; {len(self.lost)} lost and run again",
              file=sys.stderr, flush=True)  # fmt: skip


class RayServers:
    """Replicas of ``artifact`` on a Ray cluster, for as long as the ``with`` block lasts:
    ``address`` "auto" joins the cluster of this machine (``ray start``, or
    ``$RAY_ADDRESS``) or else starts a local one; otherwise the cluster at that address.
    Within an initialised Ray (a test's), that one is used and left running."""

    def __init__(self, artifact: Path, address: str = "auto", replicas: int | None = None) -> None:
        if not artifact.is_file():
            raise CopyAttackError(f"--artifact {artifact}: no such file (the model.pt to serve)")
        if replicas is not None and replicas < 1:
            raise CopyAttackError(f"--replicas must be at least 1, got {replicas}")
        self.artifact = artifact
        self.address = address
        self.replicas = replicas
        self.actors: list[Any] = []
        self.pools: list[RayPool] = []

    @contextmanager
    def started(self) -> Iterator[RayServers]:
        ray = import_ray()
        owned = not ray.is_initialized()
        if owned:
            ray.init(
                address=None if self.address == "auto" else self.address,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            replicas = self.replicas or max(cpus, 1)
            if replicas > cpus:
                raise CopyAttackError(
                    f"{replicas} replicas need {replicas} CPUs; the cluster has {cpus}"
                )
            data = self.artifact.read_bytes()
            actor = ray.remote(
                num_cpus=1,
                max_restarts=ACTOR_RESTARTS,
                max_task_retries=0,
                scheduling_strategy="SPREAD",
            )(Replica)
            shipped = ray.put(data)
            self.actors = [actor.remote(shipped, sha256_bytes(data)) for _ in range(replicas)]
            try:
                places = ray.get([a.where.remote() for a in self.actors])
            except ray.exceptions.RayActorError as exc:
                raise CopyAttackError(f"a replica did not start: {exc}") from None
            nodes = Counter((p["host"], p["node"][:8]) for p in places)
            print(f"ray: {replicas} replicas of {self.artifact} on {len(nodes)} node(s): "
                  f"{', '.join(f'{h}/{node} ({n})' for (h, node), n in nodes.items())}",
                  file=sys.stderr, flush=True)  # fmt: skip
            yield self
        finally:
            self._stop(ray)
            if owned:
                ray.shutdown()

    def _stop(self, ray: Any) -> None:
        """Each replica stopped (its folders deleted), then its actor ended."""
        stops = [a.stop.remote() for a in self.actors]
        # an actor already dead took its replica with it (tied to it)
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            ray.get(stops, timeout=60)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    @asynccontextmanager
    async def session(self, config: ExperimentConfig, view: AttackerView) -> AsyncIterator[RayPool]:
        """The replicas for one run: all of one model, trained on the view's scenario."""
        infos: list[ModelInfo] = await asyncio.gather(*(a.model_info.remote() for a in self.actors))
        model = infos[0]
        others = {i.model_fingerprint for i in infos} - {model.model_fingerprint}
        if others:
            raise CopyAttackError(f"the replicas serve different models: {sorted(others)}")
        require_scenario_of(model, view, config.scenario)
        pool = RayPool(self.actors, model)
        self.pools.append(pool)
        yield pool
