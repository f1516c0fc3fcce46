"""Worlds: isolated copies of the target platform, one per attacker key, in one process.

A world is a fork of the clean model's live state (the victim's
:class:`~recsys_server.victims.base.ServingState`; copy-on-write: the training graph and
every table are shared, a world holds only the rows its own injections
changed) plus the pretend users handed to its attacker. The :class:`WorldRegistry` owns
the worlds, keeps the ledger in step with them, and runs the CPU-heavy work (the
incremental refresh, evaluations) on dedicated threads, so the event loop keeps serving
meanwhile.

A state, once installed in a world, is never changed: an injection refreshes a fork of
it on the refresh thread and installs the fork only after the ledger has committed the
injection. So a ``/topk`` or an evaluation reads one consistent state without waiting,
sees the world before or after an injection and never halfway, and an injection that
fails leaves no trace (not even a used-up user id). Writers of a world (injections,
resets, deletion, a running retrain) are serialised by its lock, and re-check after
waiting for it that the world still exists.

A retrain is a job (:meth:`WorldRegistry.start_retrain`): accepted at once, run in the
background on a thread of its own, one job at a time, so evaluations and other worlds
never wait for a fine-tune. A queued job holds nothing; a running one holds its world's
lock (the fine-tune reads the world's graph). Cancelling a job (or resetting or deleting
its world) stops its fine-tune at the next training batch. A finished retrain is
recorded in the ledger and replayed on restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.cancellation import Cancelled, run_cancellable
from recsys_server.data import TargetData
from recsys_server.detection.features import Profiles
from recsys_server.detection.service import Detection
from recsys_server.errors import (
    BudgetExhausted,
    IdempotencyKeyReused,
    InvalidProfile,
    KeyRevoked,
    NoEvaluationUsers,
    PretendPoolTooSmall,
    RetrainFinished,
    RetrainJobNotFound,
    RetrainQueueFull,
    RetrainUnderWay,
    UnknownItems,
    UserNotFound,
    WorldNotFound,
)
from recsys_server.ledger import Ledger, LedgerError, RetrainRecord, WorldRecord
from recsys_server.observability import ServiceMetrics
from recsys_server.security import hash_key, new_api_key
from recsys_server.victims.base import ServingState
from shared.metrics import (
    ACTIVE_MIN_TRAIN,
    KS,
    N_SAMPLED,
    metrics_from_ranks,
    ranks_of,
    sample_negatives,
)
from shared.schemas import (
    COHORTS,
    PROTOCOLS,
    CohortEvaluation,
    Counts,
    CreateWorldRequest,
    DetectionReport,
    DetectRequest,
    EvaluationReport,
    InjectedProfile,
    InjectUserResponse,
    JobStatus,
    Metrics,
    RetrainJob,
    TargetEvaluation,
    WorldCreated,
    WorldUsage,
)

T = TypeVar("T")
log = logging.getLogger("recsys_server")
# seconds a refused retrain is told to wait: a fine-tune takes seconds to minutes
RETRAIN_RETRY_AFTER = 10


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
    defence: str = "none"
    defence_threshold: float | None = None
    shadow: ServingState | None = None
    quarantined: int = 0

    @property
    def injected_state(self) -> ServingState:
        """The state holding every injected user the attacker may query."""
        return self.state if self.shadow is None else self.shadow

    def unfinished_retrain(self) -> Retrain | None:
        return next((job for job in self.retrains.values() if not job.view.finished), None)


class WorldRegistry:
    def __init__(
        self,
        artifact: ModelArtifact,
        ledger: Ledger,
        *,
        max_profile_length: int,
        max_retrain_jobs: int,
        eval_seed: int = 0,
        metrics: ServiceMetrics | None = None,
        query_lease: int,
    ) -> None:
        """Build the clean state from the artifact and replay every world in the ledger.

        ``query_lease``: how many queries one ledger write counts ahead (see :meth:`topk`)."""
        if artifact.data is None:
            raise ArtifactError(
                "the model artifact carries no serving data; write it with "
                "`recsys-server train` from this version"
            )
        self.data: TargetData = artifact.data
        self.artifact = artifact
        self.ledger = ledger
        self.max_profile_length = max_profile_length
        self.max_retrain_jobs = max_retrain_jobs
        self.eval_seed = eval_seed
        self.metrics = metrics or ServiceMetrics()
        self.query_lease = query_lease
        self.clean = artifact.victim.serving_state(self.data)
        self.detection = Detection(self.clean.graph, seed=eval_seed)
        self._holders = self.data.known.tocsc()
        self._train_counts = np.bincount(self.data.train[:, 0], minlength=self.data.n_users)
        self._worlds: dict[str, World] = {}
        self._by_key: dict[str, World] = {}
        self._clean_metrics: dict[int, dict[str, tuple[int, dict[str, Metrics]]]] = {}
        self._cases: dict[int, EvaluationCases] = {}
        # one thread mutates world states, one evaluates: neither blocks the event loop
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="refresh")
        self._evaluator = ThreadPoolExecutor(1, thread_name_prefix="evaluate")
        # and retrains run on a third, one at a time, off the evaluations' thread
        self._retrainer = ThreadPoolExecutor(1, thread_name_prefix="retrain")
        self._retrain_slot = asyncio.Semaphore(1)
        # retrain jobs whose task has not ended yet (what a shutdown waits for); which of
        # them count against the limit is their status, the same one their route shows
        self._retrains: dict[str, Retrain] = {}
        for record in ledger.worlds():
            self._restore(record)

    def close(self) -> None:
        """Give back every world's unanswered lease (the counters become exact), then stop
        the compute threads."""
        try:
            for world in self._worlds.values():
                self._return_lease(world)
        except sqlite3.OperationalError as exc:
            # a ledger held by another process: the rest stays counted as spent, as after
            # a crash, which over-counts but never lets a budget be passed
            log.warning("unanswered query leases not given back: %s", exc)
        self._refresher.shutdown(wait=True)
        self._evaluator.shutdown(wait=True)
        self._retrainer.shutdown(wait=True)

    async def stop_retrains(self) -> None:
        """Cancel every unfinished retrain job and wait until each has stopped (shutdown:
        a fine-tune would otherwise hold the process for minutes)."""
        jobs = list(self._retrains.values())
        for job in jobs:
            self._stop(job)
        if jobs:
            await asyncio.wait([job.task for job in jobs if job.task is not None])

    @property
    def n_worlds(self) -> int:
        return len(self._worlds)

    # --- lookup --------------------------------------------------------------------

    def get(self, world_id: str) -> World:
        try:
            return self._worlds[world_id]
        except KeyError:
            raise WorldNotFound(world_id) from None

    def world_for_key(self, key: str) -> World | None:
        # looked up by the key's SHA-256: lookup time can only reveal bits of the hash,
        # which say nothing usable about a 256-bit random key
        return self._by_key.get(hash_key(key))

    def world_ids(self) -> list[str]:
        return list(self._worlds)

    # --- admin ---------------------------------------------------------------------

    async def create(self, request: CreateWorldRequest) -> WorldCreated:
        """A new world; a defence's detector is fitted first (once per detector: seconds
        on the real pairs, on the refresh thread), so its threshold can be stated."""
        pool = self.data.pretend_pool
        if request.n_pretend_users > len(pool):
            raise PretendPoolTooSmall(
                f"n_pretend_users is {request.n_pretend_users}, but the pretend-user pool "
                f"holds {len(pool)} users"
            )
        if request.defence != "none":
            await self._run(self._refresher, self.detection.detector, request.defence)
        rng = np.random.default_rng(request.seed)
        pretend = sorted(int(u) for u in rng.choice(pool, request.n_pretend_users, replace=False))
        world_id, key = "w_" + secrets.token_hex(8), new_api_key()
        defence, threshold = request.defence, request.defence_threshold
        self.ledger.create_world(
            world_id, hash_key(key), pretend, request.budgets, defence, threshold
        )
        world = self._new_world(world_id, hash_key(key), pretend, defence, threshold)
        self._add(world)
        return WorldCreated(
            world_id=world_id,
            api_key=key,
            pretend_users=pretend,
            budgets=request.budgets,
            defence=defence,
            defence_threshold=self._threshold_of(world),
        )

    async def delete(self, world: World) -> None:
        # its running fine-tune stops at its next batch and gives the lock up
        await self._stop_retrain_of(world)
        async with world.lock:
            _still_there(world)
            self.ledger.delete_world(world.world_id)
            world.deleted = True
            del self._worlds[world.world_id]
            del self._by_key[world.key_hash]
            for counter in (self.metrics.queries, self.metrics.injections):
                counter.remove(world.world_id)

    async def reset(self, world: World, restore_budgets: bool) -> WorldUsage:
        # a retrain of the attacked graph would be dropped by the reset: stop it instead
        await self._stop_retrain_of(world)
        async with world.lock:
            _still_there(world)
            # given back first: a restored budget must not keep an old lease, and the
            # lifetime total must not keep its unanswered rest
            self._return_lease(world)
            self.ledger.reset_world(world.world_id, restore_budgets)
            world.state = self.clean.fork()
            world.shadow = None if world.shadow is None else self.clean.fork()
            world.quarantined = 0
            world.embedding_epoch = 0
        return self.usage(world)

    def start_retrain(self, world: World, epochs: int) -> RetrainJob:
        """The second threat model, as a job: a scheduled fine-tune of the model on the
        world's polluted graph (training users plus its injected ones), as a nightly job
        would do; once it succeeded the world serves the tuned model, refreshed on the
        same graph. Answers at once; the job runs in the background."""
        _still_there(world)
        earlier = world.unfinished_retrain()
        if earlier is not None:
            # a second fine-tune would start from the first one's model: one at a time
            raise RetrainUnderWay(
                f"world {world.world_id!r} already has retrain job {earlier.view.job_id} "
                f"({earlier.view.status}); wait for it or cancel it"
            )
        unfinished = sum(not job.view.finished for job in self._retrains.values())
        if unfinished >= self.max_retrain_jobs:
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
        job = world.retrains[view.job_id] = self._retrains[view.job_id] = Retrain(view)
        job.task = asyncio.create_task(self._retrain(world, job))
        job.task.add_done_callback(lambda _: self._retrain_ended(job))
        return view

    def retrain_job(self, world: World, job_id: str) -> Retrain:
        try:
            return world.retrains[job_id]
        except KeyError:
            raise RetrainJobNotFound(world.world_id, job_id) from None

    async def cancel_retrain(self, job: Retrain) -> RetrainJob:
        """Stop an unfinished job and answer once it has stopped (a running fine-tune
        stops at its next batch); the world keeps the model it had."""
        if job.view.finished:
            raise RetrainFinished(
                f"retrain job {job.view.job_id} already {job.view.status}; nothing to cancel "
                "(a reset of the world drops a finished retrain)"
            )
        await self._stopped(job)
        return job.view

    def usage(self, world: World) -> WorldUsage:
        """The live counts: the ledger's, less the queries leased but not yet answered."""
        record = self.ledger.world(world.world_id)
        lease = world.query_lease
        return WorldUsage(
            world_id=world.world_id,
            pretend_users=sorted(world.pretend_users),
            budgets=record.budgets,
            used=_less_queries(record.used, lease),
            total=_less_queries(record.total, lease),
            remaining=_less_queries(record.remaining(), -lease),
            injected_users=len(world.state.graph.injected_users),
            embedding_epoch=world.embedding_epoch,
            defence=world.defence,
            defence_threshold=self._threshold_of(world),
            quarantined=world.quarantined,
        )

    def export(self, world: World) -> list[InjectedProfile]:
        return [
            InjectedProfile(
                user_id=r.user_id,
                items=r.items,
                idempotency_key=r.idempotency_key,
                created_at=r.created_at,
                quarantined=r.quarantined,
            )
            for r in self.ledger.injections(world.world_id)
        ]

    async def evaluate(
        self, world: World, targets: list[int], protocols: tuple[str, ...] = PROTOCOLS
    ) -> EvaluationReport:
        """HR@K / NDCG@K of each target over the evaluation users (all, and those with 3+
        training interactions), clean model and world, under ``protocols``, on the same
        sampled negatives."""
        self._check_items(targets, "target_items")
        # the installed state never changes: evaluate it without holding up the world
        evaluated = await self._run(
            self._evaluator, self._evaluate_sync, world.state, targets, protocols
        )
        mean = {
            cohort: CohortEvaluation(
                n_users=round(float(np.mean([t.cohorts[cohort].n_users for t in evaluated]))),
                before=_mean([t.cohorts[cohort].before for t in evaluated]),
                after=_mean([t.cohorts[cohort].after for t in evaluated]),
            )
            for cohort in COHORTS
        }
        return EvaluationReport(
            world_id=world.world_id, seed=self.eval_seed, targets=evaluated, mean=mean
        )

    async def detect(self, world: World, request: DetectRequest) -> DetectionReport:
        """Run a shilling detector over the world's real and injected users (the ledger's
        injections are the ground truth); the first use of a detector fits it."""
        injected = [(r.user_id, r.items) for r in self.ledger.injections(world.world_id)]
        return await self._run(
            self._evaluator,
            self.detection.judge,
            world.world_id,
            request.detector,
            injected,
            request.threshold,
            request.include_users,
        )

    # --- attacker ------------------------------------------------------------------

    def topk(self, world: World, user: int, k: int) -> list[int]:
        """Synchronous on purpose: check, count and answer with no await in between, so
        nothing can change the world halfway (about 0.1 ms of numpy).

        A query is answered from the world's lease: queries the ledger already counts
        as spent. An empty lease is refilled first with up to ``query_lease`` queries
        in one committed write, so there is one write per lease, not per query, and an
        answered query was always committed before it was answered."""
        if world.deleted:
            raise KeyRevoked()
        # the attacker may query its pretend users and the users it injected, nothing else
        if user in world.pretend_users:
            state = world.state
        elif world.injected_state.graph.is_injected(user):
            state = world.injected_state
        else:
            raise UserNotFound(user)
        if world.query_lease == 0:
            world.query_lease = self.ledger.lease_queries(world.world_id, self.query_lease)
            if world.query_lease == 0:
                raise BudgetExhausted("the query budget of this world is spent")
        world.query_lease -= 1
        self.metrics.queries.labels(world.world_id).inc()
        return state.topk(user, k).tolist()

    async def inject(
        self, world: World, items: list[int], idempotency_key: str | None
    ) -> InjectUserResponse:
        self._check_profile(items)
        async with world.lock:
            if world.deleted:
                raise KeyRevoked()
            if idempotency_key is not None:
                earlier = self.ledger.injection_by_key(world.world_id, idempotency_key)
                if earlier is not None:
                    if earlier.items != items:
                        raise IdempotencyKeyReused(idempotency_key)
                    return self._injected(world, earlier.user_id, len(items))
            remaining = self.ledger.world(world.world_id).remaining()
            if remaining.injections < 1:
                raise BudgetExhausted("the injection budget of this world is spent")
            if remaining.items < len(items):
                raise BudgetExhausted(
                    f"the item budget of this world has {remaining.items} items left, "
                    f"the profile has {len(items)}"
                )
            started = time.perf_counter()
            refreshed, shadow, user, quarantined = await self._run(
                self._refresher, self._screened, world, items
            )
            self.metrics.refresh_seconds.observe(time.perf_counter() - started)
            # acknowledged only once committed; if this raises, ``refreshed`` is dropped
            if not self.ledger.record_injection(
                world.world_id, user, items, idempotency_key, quarantined
            ):
                raise BudgetExhausted("a budget of this world is spent")  # checked above: rare
            world.state, world.shadow = refreshed, shadow
            world.quarantined += quarantined
            world.embedding_epoch += 1
            self.metrics.injections.labels(world.world_id).inc()
            return self._injected(world, user, len(items))

    # --- internals -----------------------------------------------------------------

    async def _retrain(self, world: World, job: Retrain) -> None:
        # the slot first: a queued job holds neither the thread nor its world's lock
        try:
            async with self._retrain_slot, world.lock:
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
            state, digest = await self._run(
                self._retrainer,
                run_cancellable,
                job.cancel,
                _retrained,
                world.state,
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
        world.state = state
        world.embedding_epoch += 1
        job.view.embedding_epoch = world.embedding_epoch
        job.finish("succeeded")

    def _retrain_ended(self, job: Retrain) -> None:
        del self._retrains[job.view.job_id]
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

    async def _stop_retrain_of(self, world: World) -> None:
        job = world.unfinished_retrain()
        if job is not None:
            await self._stopped(job)

    def _add(self, world: World) -> None:
        self._worlds[world.world_id] = world
        self._by_key[world.key_hash] = world

    def _return_lease(self, world: World) -> None:
        if world.query_lease:
            self.ledger.return_queries(world.world_id, world.query_lease)
            world.query_lease = 0

    def _new_world(
        self,
        world_id: str,
        key_hash: str,
        pretend: list[int],
        defence: str,
        threshold: float | None,
    ) -> World:
        shadow = None if defence == "none" else self.clean.fork()
        return World(
            world_id,
            key_hash,
            frozenset(pretend),
            self.clean.fork(),
            defence=defence,
            defence_threshold=threshold,
            shadow=shadow,
        )

    def _threshold_of(self, world: World) -> float | None:
        """The defence's threshold in force (None without a defence). A restored world's
        detector is fitted here if it was not yet (the replay's, on the loading thread)."""
        if world.defence == "none" or world.defence_threshold is not None:
            return world.defence_threshold
        return self.detection.detector(world.defence)[0].threshold  # type: ignore[arg-type]

    def _screened(
        self, world: World, items: list[int]
    ) -> tuple[ServingState, ServingState | None, int, bool]:
        """The world's states with the profile injected, its user id, and whether the
        defence quarantined it (then the defended state is left as it was). Runs on the
        refresh thread: a defence's first use fits its detector."""
        if world.shadow is None:
            refreshed, user = _with_user(world.state, items)
            return refreshed, None, user, False
        detector, _ = self.detection.detector(world.defence)  # type: ignore[arg-type]
        score = float(detector.score(Profiles.of([items]))[0])
        threshold = self._threshold_of(world)
        quarantined = threshold is not None and score > threshold
        shadow, user = _with_user(world.shadow, items)
        # the defended refresh runs whatever the verdict, so that a quarantined injection
        # takes the time an accepted one does: its answer time must not tell
        defended = _with_user(world.state, items)[0]
        return (world.state if quarantined else defended), shadow, user, quarantined

    def _restore(self, record: WorldRecord) -> None:
        world = self._new_world(
            record.world_id,
            record.key_hash,
            record.pretend_users,
            record.defence,
            record.defence_threshold,
        )
        if record.defence != "none":  # fitted while loading, not on a first request
            self.detection.detector(record.defence)  # type: ignore[arg-type]
        retrains = self.ledger.retrains(record.world_id)
        injections = self.ledger.injections(record.world_id)
        for position, injection in enumerate(injections):
            retrains = self._replay_retrains(world, retrains, position)
            items = np.asarray(injection.items, dtype=np.int64)
            if world.shadow is None:
                user = world.state.add_user(items)
            else:  # the user ids are the shadow's; the defended state numbers its own
                user = world.shadow.add_user(items)
                # the ledger's verdict, not a new one: a replay quarantines the same
                if injection.quarantined:
                    world.quarantined += 1
                else:
                    world.state.add_user(items)
            if user != injection.user_id:
                raise LedgerError(
                    f"replaying world {record.world_id}: injection recorded as user "
                    f"{injection.user_id} came back as user {user}"
                )
            world.embedding_epoch += 1
        self._replay_retrains(world, retrains, len(injections))
        self._add(world)

    def _replay_retrains(
        self, world: World, retrains: list[RetrainRecord], injected: int
    ) -> list[RetrainRecord]:
        """Redo the retrains recorded after the world's first ``injected`` injections (the
        same seeded fine-tune on the same graph); the ones still to come are returned."""
        while retrains and retrains[0].after_injections <= injected:
            retrain, *retrains = retrains
            state, digest = _retrained(world.state, self.data, retrain.epochs, _probe_users(world))
            if digest != retrain.scores_sha256:
                raise LedgerError(
                    f"replaying world {world.world_id}: a retrain ({retrain.epochs} epochs "
                    f"after {injected} injections) gave other scores than when it ran; was "
                    "the model served with other compute threads or another torch version? "
                    "Serve it as it ran, or drop the world's retrains from the ledger "
                    f"(DELETE FROM retrains WHERE world_id = '{world.world_id}')"
                )
            world.state = state
            world.embedding_epoch += 1
        return retrains

    def _injected(self, world: World, user: int, n_items: int) -> InjectUserResponse:
        return InjectUserResponse(
            user_id=user, n_items=n_items, remaining=self.ledger.world(world.world_id).remaining()
        )

    def _check_items(self, items: list[int], name: str) -> None:
        unknown = sorted({i for i in items if i >= self.data.n_items})
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise UnknownItems(
                f"{name}: {len(unknown)} unknown item ids (the catalogue has ids 0.."
                f"{self.data.n_items - 1}): {shown}"
            )

    def _check_profile(self, items: list[int]) -> None:
        if len(items) > self.max_profile_length:
            raise InvalidProfile(
                f"items: the profile has {len(items)} items, at most "
                f"{self.max_profile_length} are allowed"
            )
        self._check_items(items, "items")
        seen: set[int] = set()
        repeated = sorted({i for i in items if i in seen or seen.add(i)})
        if repeated:
            raise InvalidProfile(
                f"items: repeated item ids {repeated[:10]}; a profile holds each item once"
            )

    def _evaluate_sync(
        self, state: ServingState, targets: list[int], protocols: tuple[str, ...]
    ) -> list[TargetEvaluation]:
        out = []
        for target in targets:
            if target not in self._clean_metrics:
                self._clean_metrics[target] = self._rank_metrics(self.clean, target, PROTOCOLS)
            before = self._clean_metrics[target]
            after = self._rank_metrics(state, target, protocols)
            cohorts = {
                cohort: CohortEvaluation(
                    n_users=before[cohort][0],
                    before={p: m for p, m in before[cohort][1].items() if p in protocols},
                    after=after[cohort][1],
                )
                for cohort in COHORTS
            }
            out.append(TargetEvaluation(item=target, cohorts=cohorts))
        return out

    def _cases_of(self, target: int) -> EvaluationCases:
        """The evaluation users who never had ``target`` and their sampled negatives, drawn
        once per target (every world's evaluation of it uses the same)."""
        if target not in self._cases:
            holders = self._holders[:, target].nonzero()[0]
            users = np.setdiff1d(self.data.eval_users, holders)
            if len(users) == 0:
                raise NoEvaluationUsers(f"target_items: every evaluation user holds item {target}")
            negatives = sample_negatives(users, self.data.known, N_SAMPLED, self.eval_seed)
            active = self._train_counts[users] >= ACTIVE_MIN_TRAIN
            self._cases[target] = EvaluationCases(users, negatives, active)
        return self._cases[target]

    def _rank_metrics(
        self, state: ServingState, target: int, protocols: tuple[str, ...]
    ) -> dict[str, tuple[int, dict[str, Metrics]]]:
        """Per cohort: its users who never had ``target``, and their metrics."""
        cases = self._cases_of(target)
        ranks = ranks_of(
            state.scores,
            cases.users,
            np.full(len(cases.users), target),
            self.data.known,
            protocols=protocols,
            negatives=cases.negatives,
            pair_score=state.scores_of,
        )
        out = {}
        for cohort, keep in (("all", np.ones(len(cases.users), dtype=bool)), ("3+", cases.active)):
            if not keep.any():  # no such user: no metrics, n_users says why
                out[cohort] = (0, {})
                continue
            out[cohort] = (
                int(keep.sum()),
                {p: metrics_from_ranks(r[keep], KS) for p, r in ranks.items()},
            )
        return out

    @staticmethod
    async def _run(executor: ThreadPoolExecutor, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


@dataclass(frozen=True)
class EvaluationCases:
    users: np.ndarray  # evaluation users who never had the target
    negatives: np.ndarray  # (len(users), N_SAMPLED) sampled items of each
    active: np.ndarray  # users with 3+ training interactions (the second cohort)


def _with_user(state: ServingState, items: list[int]) -> tuple[ServingState, int]:
    """A fork of ``state`` with one more user (``state`` itself is left as it was)."""
    refreshed = state.fork()
    return refreshed, refreshed.add_user(np.asarray(items, dtype=np.int64))


def _probe_users(world: World) -> np.ndarray:
    """Whose scores fingerprint a retrain: the users its attacker sees."""
    return np.array(sorted(world.pretend_users), dtype=np.int64)


def _retrained(
    state: ServingState, data: TargetData, epochs: int, probe: np.ndarray
) -> tuple[ServingState, str]:
    """The fine-tuned state, and the sha256 of its scores of ``probe``: what the ledger
    records, and what a replay must give again."""
    tuned = state.retrained(data, epochs)
    return tuned, hashlib.sha256(tuned.scores(probe).tobytes()).hexdigest()


def _still_there(world: World) -> None:
    if world.deleted:
        raise WorldNotFound(world.world_id)


def _mean(reports: list[dict[str, Metrics]]) -> dict[str, Metrics]:
    """Protocol -> metric means over the reports that have any (a cohort can be empty)."""
    reports = [report for report in reports if report]
    if not reports:
        return {}
    return {
        protocol: {
            name: float(np.mean([r[protocol][name] for r in reports]))
            for name in reports[0][protocol]
        }
        for protocol in reports[0]
    }


def _less_queries(counts: Counts, n: int) -> Counts:
    return counts.model_copy(update={"queries": counts.queries - n})
