"""Retrain jobs: the second threat model, a scheduled fine-tune of the model on a world's
polluted graph, as a job (accepted at once, run in the background on a thread of its
own, one job at a time, so evaluations and other worlds never wait for a fine-tune). A
queued job holds nothing; a running one holds its world's lock (the fine-tune reads the
world's graph). Cancelling a job (or resetting or deleting its world) stops its
fine-tune at the next training batch. A finished retrain is recorded in the ledger and
replayed on restart."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from recsys_server.cancellation import Cancelled, run_cancellable
from recsys_server.data import TargetData
from recsys_server.domain_errors import (
    RetrainFinished,
    RetrainJobNotFound,
    RetrainQueueFull,
    RetrainUnderWay,
)
from recsys_server.ledger import Ledger, LedgerError, RetrainRecord
from recsys_server.victims.base import ServingState
from recsys_server.worlds.world import Retrain, World, run_on, still_there
from shared.schemas import RetrainJob

log = logging.getLogger("recsys_server")
# seconds a refused retrain is told to wait: a fine-tune takes seconds to minutes
RETRAIN_RETRY_AFTER = 10


class RetrainJobs:
    def __init__(self, ledger: Ledger, data: TargetData, max_jobs: int) -> None:
        self.ledger = ledger
        self.data = data
        self.max_jobs = max_jobs
        # retrains run on a thread of their own, one at a time, off the evaluations' thread
        self._retrainer = ThreadPoolExecutor(1, thread_name_prefix="retrain")
        self._slot = asyncio.Semaphore(1)
        # jobs whose task has not ended yet (what a shutdown waits for); which of them
        # count against the limit is their status, the same one their route shows
        self._jobs: dict[str, Retrain] = {}

    def close(self) -> None:
        self._retrainer.shutdown(wait=True)

    def start(self, world: World, epochs: int) -> RetrainJob:
        """A scheduled fine-tune of the model on the world's polluted graph (training users
        plus its injected ones), as a nightly job would do; once it succeeded the world
        serves the tuned model, refreshed on the same graph. Answers at once; the job
        runs in the background."""
        still_there(world)
        earlier = world.unfinished_retrain()
        if earlier is not None:
            # a second fine-tune would start from the first one's model: one at a time
            raise RetrainUnderWay(
                f"world {world.world_id!r} already has retrain job {earlier.view.job_id} "
                f"({earlier.view.status}); wait for it or cancel it"
            )
        unfinished = sum(not job.view.finished for job in self._jobs.values())
        if unfinished >= self.max_jobs:
            raise RetrainQueueFull(
                f"{unfinished} retrain jobs are queued or running, the limit "
                f"(RECSYS_MAX_RETRAIN_JOBS); retry when one has finished",
                RETRAIN_RETRY_AFTER,
            )
        view = RetrainJob(
            job_id="j_" + secrets.token_hex(8),
            world_id=world.world_id,
            epochs=epochs,
            status="queued",
            created_at=time.time(),
        )
        job = world.retrains[view.job_id] = self._jobs[view.job_id] = Retrain(view)
        job.task = asyncio.create_task(self._retrain(world, job))
        job.task.add_done_callback(lambda _: self._ended(job))
        return view

    def job(self, world: World, job_id: str) -> Retrain:
        try:
            return world.retrains[job_id]
        except KeyError:
            raise RetrainJobNotFound(world.world_id, job_id) from None

    async def cancel(self, job: Retrain) -> RetrainJob:
        """Stop an unfinished job and answer once it has stopped (a running fine-tune
        stops at its next batch); the world keeps the model it had."""
        if job.view.finished:
            raise RetrainFinished(
                f"retrain job {job.view.job_id} already {job.view.status}; nothing to cancel "
                "(a reset of the world drops a finished retrain)"
            )
        await self._stopped(job)
        return job.view

    async def stop_all(self) -> None:
        """Cancel every unfinished job and wait until each has stopped (shutdown: a
        fine-tune would otherwise hold the process for minutes)."""
        jobs = list(self._jobs.values())
        for job in jobs:
            self._stop(job)
        if jobs:
            await asyncio.wait([job.task for job in jobs if job.task is not None])

    async def stop_of(self, world: World) -> None:
        """Stop the world's unfinished job, if any (before a reset or a deletion)."""
        job = world.unfinished_retrain()
        if job is not None:
            await self._stopped(job)

    def replay(
        self, world: World, retrains: list[RetrainRecord], injected: int
    ) -> list[RetrainRecord]:
        """Redo the retrains recorded after the world's first ``injected`` injections (the
        same seeded fine-tune on the same graph); the ones still to come are returned."""
        while retrains and retrains[0].after_injections <= injected:
            retrain, *retrains = retrains
            state, shadow, digest = _retrained(
                world.state, world.shadow, self.data, retrain.epochs, _probe_users(world)
            )
            if digest != retrain.scores_sha256:
                raise LedgerError(
                    f"replaying world {world.world_id}: a retrain ({retrain.epochs} epochs "
                    f"after {injected} injections) gave other scores than when it ran; was "
                    "the model served with other compute threads or another torch version? "
                    "Serve it as it ran, or drop the world's retrains from the ledger "
                    f"(DELETE FROM retrains WHERE world_id = '{world.world_id}')"
                )
            world.state, world.shadow = state, shadow
            world.embedding_epoch += 1
        return retrains

    # --- internals -----------------------------------------------------------------

    async def _retrain(self, world: World, job: Retrain) -> None:
        # the slot first: a queued job holds neither the thread nor its world's lock
        try:
            async with self._slot, world.lock:
                if world.deleted:  # deleted while the job was queued
                    job.finish("cancelled", "the world was deleted")
                    return
                job.view.status, job.view.started_at = "running", time.time()
                await self._fine_tune(world, job)
        except asyncio.CancelledError:  # only ever while queued (see _stop)
            job.finish("cancelled", "cancelled before it started")
            raise

    async def _fine_tune(self, world: World, job: Retrain) -> None:
        """Run the job's fine-tune, record it, install it; the job says how it ended."""
        try:
            state, shadow, digest = await run_on(
                self._retrainer,
                run_cancellable,
                job.cancel,
                _retrained,
                world.state,
                world.shadow,
                self.data,
                job.view.epochs,
                _probe_users(world),
            )
            # every injection so far, quarantined too: the ledger position a replay counts
            after = len(world.injected_state.graph.injected_users)
            self.ledger.record_retrain(world.world_id, after, job.view.epochs, digest)
        except Cancelled:
            job.finish("cancelled", "cancelled while running; the world kept its model")
            return
        except Exception as exc:  # the job reports it; the service goes on
            log.exception("retrain job %s of world %s failed", job.view.job_id, world.world_id)
            job.finish("failed", f"{type(exc).__name__}: {exc}")
            return
        world.state, world.shadow = state, shadow
        world.embedding_epoch += 1
        job.view.embedding_epoch = world.embedding_epoch
        job.finish("succeeded")

    def _ended(self, job: Retrain) -> None:
        del self._jobs[job.view.job_id]
        if not job.view.finished:  # cancelled before its first step: its code never ran
            job.finish("cancelled", "cancelled before it started")

    def _stop(self, job: Retrain) -> None:
        job.cancel.set()  # a running fine-tune raises Cancelled at its next check
        if job.view.status == "queued" and job.task is not None:
            job.task.cancel()  # waiting for the slot or the lock: nothing runs yet

    async def _stopped(self, job: Retrain) -> None:
        """Stop the job and wait until its task has ended (its status says how)."""
        self._stop(job)
        assert job.task is not None  # set when the job was accepted
        await asyncio.wait([job.task])


def _probe_users(world: World) -> np.ndarray:
    """Whose scores fingerprint a retrain: the users its attacker sees."""
    return np.array(sorted(world.pretend_users), dtype=np.int64)


def _retrained(
    state: ServingState,
    shadow: ServingState | None,
    data: TargetData,
    epochs: int,
    probe: np.ndarray,
) -> tuple[ServingState, ServingState | None, str]:
    """The fine-tuned state and shadow, and the sha256 of the state's scores of ``probe``:
    what the ledger records, and what a replay must give again. A defended world's shadow
    is fine-tuned on its own graph (every injection, quarantined ones too), as an
    undefended twin world would be: were it left untuned, the lists of injected users
    would come from another model than the pretend users' after a retrain, and tell."""
    tuned = state.retrained(data, epochs)
    tuned_shadow = None if shadow is None else shadow.retrained(data, epochs)
    return tuned, tuned_shadow, hashlib.sha256(tuned.scores(probe).tobytes()).hexdigest()
