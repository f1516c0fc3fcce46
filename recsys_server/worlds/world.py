"""A world and a retrain job as the registry keeps them, and the small helpers its pieces
share: the deleted-world check, the item-id check, the one-user refresh, the hop to a
compute thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from recsys_server.domain_errors import UnknownItems, WorldNotFound
from recsys_server.victims.base import ServingState
from shared.schemas import Defence, JobStatus, RetrainJob

T = TypeVar("T")


@dataclass
class Retrain:
    """A retrain job as the registry runs it; ``view`` is what its route answers."""

    view: RetrainJob
    cancel: threading.Event = field(default_factory=threading.Event)  # read by the thread
    task: asyncio.Task[None] | None = None

    def finish(self, status: JobStatus, detail: str | None = None) -> None:
        self.view.status, self.view.detail = status, detail
        self.view.finished_at = time.time()


@dataclass
class World:
    world_id: str
    key_hash: str
    pretend_users: frozenset[int]
    state: ServingState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # serialises writers
    embedding_epoch: int = 0  # refreshes applied to ``state``
    # queries the ledger already counts as spent and this process has not answered yet
    query_lease: int = 0
    deleted: bool = False
    retrains: dict[str, Retrain] = field(default_factory=dict)  # its jobs, by id
    # a defended world (``defence`` not "none") keeps a shadow: every injected user,
    # quarantined or not, whose /topk answers the attacker's queries of injected users,
    # so a quarantined injection is answered exactly like an accepted one; ``state``
    # holds the accepted ones only and answers the pretend users and evaluations
    defence: Defence = "none"
    # flagged: a score above it; the creator's or the detector's default at creation
    # (recorded in the ledger, so it stays); None without a defence
    defence_threshold: float | None = None
    shadow: ServingState | None = None
    quarantined: int = 0

    @property
    def injected_state(self) -> ServingState:
        """The state holding every injected user the attacker may query."""
        return self.state if self.shadow is None else self.shadow

    def unfinished_retrain(self) -> Retrain | None:
        return next((job for job in self.retrains.values() if not job.view.finished), None)


def still_there(world: World) -> None:
    """For a writer that waited for the world's lock: the world was not deleted meanwhile."""
    if world.deleted:
        raise WorldNotFound(world.world_id)


def check_items(items: list[int], n_items: int, name: str) -> None:
    unknown = sorted({i for i in items if i >= n_items})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise UnknownItems(
            f"{name}: {len(unknown)} unknown item ids (the catalogue has ids 0.."
            f"{n_items - 1}): {shown}"
        )


def with_user(state: ServingState, items: list[int]) -> tuple[ServingState, int]:
    """A fork of ``state`` with one more user (``state`` itself is left as it was)."""
    refreshed = state.fork()
    return refreshed, refreshed.add_user(np.asarray(items, dtype=np.int64))


async def run_on(executor: ThreadPoolExecutor, function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` on ``executor``'s thread, the event loop serving meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)
