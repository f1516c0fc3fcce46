"""Sync and async clients of the target service, over httpx.

Each API method is written once as a :class:`_Call` (method, path, body, how to parse
the answer, what to count); the sync and async clients differ only in how they send it.
Retries (each logged at INFO on the ``attacker_client`` logger): exponential backoff with
jitter on connection errors, timeouts, 429 rate-limited (waiting ``Retry-After`` when
given, unless it asks for more than ``max_retry_after`` seconds: then the 429 is raised at
once) and 5xx; never on a spent budget (``x-should-retry: false``) or another 4xx. A call
that may change state is retried after a lost answer only when repeating it is safe: an
injection carries an ``Idempotency-Key`` (generated once per call), so its retry injects
nothing twice; ``create_world`` is never sent twice. A success answer whose body is not
the API's raises :class:`APIResponseValidationError`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from attacker_client._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    InternalServerError,
    RateLimitError,
    RetrainError,
    retry_after_seconds,
    status_error,
)
from attacker_client._transport import KeepAliveTransport
from shared.schemas import (
    PROTOCOLS,
    Budgets,
    Defence,
    DetectionReport,
    DetectorName,
    DetectRequest,
    EvaluationReport,
    InjectedProfile,
    InjectUserResponse,
    ModelInfo,
    Protocol,
    RetrainJob,
    TopKResponse,
    WorldCreated,
    WorldUsage,
)

logger = logging.getLogger("attacker_client")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
# a server asking to wait longer than this (a daily limit, say) gets its 429 raised, not
# a client asleep for an hour
DEFAULT_MAX_RETRY_AFTER = 60.0
BACKOFF_BASE = 0.25  # seconds before the first retry, doubled each time
BACKOFF_CAP = 8.0
POLL_FIRST = 0.05  # seconds before the first look at a retrain job, doubled up to the cap
POLL_CAP = 2.0


@dataclass
class ClientStats:
    """What this client has spent: an attack reports its own cost from it."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    queries: int = 0  # answered /topk calls
    injections: int = 0  # acknowledged injections (a retried one counts once)
    injected_items: int = 0


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # safe to repeat after a lost answer or a 5xx (reads, idempotent writes)
    idempotent: bool = True
    on_success: Callable[[T], None] | None = None
    # a 429 too-many-jobs is retried for as long as it lasts, beyond max_retries: a place
    # in the server's job queue frees whenever a job ends
    wait_for_place: bool = False


@dataclass(frozen=True)
class _Retry:
    delay: float


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate_json(response.content)


def _models(cls: type[M]) -> Callable[[httpx.Response], list[M]]:
    # list[cls] is a valid alias at run time, but mypy takes no variable as a type argument
    adapter = TypeAdapter(list[cls])  # type: ignore[valid-type]
    return lambda response: adapter.validate_json(response.content)


class _BaseClient:
    def __init__(self, max_retries: int, retry_seed: int | None, max_retry_after: float) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if max_retry_after < 0:
            raise ValueError("max_retry_after must be >= 0")
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self.stats = ClientStats()
        self._jitter = random.Random(retry_seed)

    def _settle(
        self, call: _Call[T], attempt: int, outcome: httpx.Response | Exception
    ) -> T | _Retry:
        """The call's result, a :class:`_Retry`, or the error raised."""
        if isinstance(outcome, httpx.Response):
            if outcome.is_success:
                try:
                    result = call.parse(outcome)
                except ValueError as exc:  # pydantic's ValidationError, or not JSON at all
                    raise APIResponseValidationError(outcome, exc) from exc
                if call.on_success is not None:
                    call.on_success(result)
                return result
            error: Exception = status_error(outcome)
            if call.wait_for_place and _no_place(error):
                return self._retry(call, attempt, outcome, error, unbounded=True)
            # a rate-limited request was never processed: always safe to send again
            retryable = isinstance(error, RateLimitError) or (
                isinstance(error, InternalServerError) and call.idempotent
            )
            retryable &= outcome.headers.get("x-should-retry") != "false"
            asked = retry_after_seconds(outcome)
            retryable &= asked is None or asked <= self.max_retry_after
        else:
            kind = (
                APITimeoutError
                if isinstance(outcome, httpx.TimeoutException)
                else APIConnectionError
            )
            error = kind(f"{call.method} {call.path}: {outcome!r}")
            retryable = call.idempotent
        if not retryable or attempt >= self.max_retries:
            raise error
        return self._retry(call, attempt, outcome, error)

    def _retry(
        self,
        call: _Call[Any],
        attempt: int,
        outcome: httpx.Response | Exception,
        error: Exception,
        *,
        unbounded: bool = False,
    ) -> _Retry:
        delay = self._delay(attempt, outcome)
        self.stats.retries += 1
        of = "" if unbounded else f" of {self.max_retries}"
        logger.info("retry %d%s of %s %s in %.2f s: %s", attempt + 1, of, call.method,
                    call.path, delay, error)  # fmt: skip
        return _Retry(delay)

    def _delay(self, attempt: int, outcome: httpx.Response | Exception) -> float:
        if isinstance(outcome, httpx.Response):
            asked = retry_after_seconds(outcome)
            if asked is not None:
                return asked
        # full jitter on the upper half: spreads retries of concurrent callers apart
        backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
        return backoff * (0.5 + 0.5 * self._jitter.random())


def _no_place(error: Exception) -> bool:
    """A retrain refused because the server has too many jobs: nothing was started."""
    if not isinstance(error, RateLimitError):
        return False
    return error.problem is not None and error.problem.type == "too-many-jobs"


class _SyncHTTP(_BaseClient):
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: float,
        max_retries: int,
        transport: httpx.BaseTransport | None,
        retry_seed: int | None,
        max_retry_after: float,
    ) -> None:
        super().__init__(max_retries, retry_seed, max_retry_after)
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

    def _execute(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                outcome: httpx.Response | Exception = self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                outcome = exc
            step = self._settle(call, attempt, outcome)
            if not isinstance(step, _Retry):
                return step
            time.sleep(step.delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class _AsyncHTTP(_BaseClient):
    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout: float,
        max_retries: int,
        transport: httpx.AsyncBaseTransport | None,
        retry_seed: int | None,
        max_retry_after: float,
        max_connections: int = 8,
    ) -> None:
        super().__init__(max_retries, retry_seed, max_retry_after)
        # a few connections, all kept alive: enough to overlap client and server work
        # (the server answers one request at a time); the lean transport costs a third
        # of httpcore's CPU per request (benchmarks/client_transport.py)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            transport=transport or KeepAliveTransport(max_connections),
        )

    async def _execute(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                outcome: httpx.Response | Exception = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                outcome = exc
            step = self._settle(call, attempt, outcome)
            if not isinstance(step, _Retry):
                return step
            await asyncio.sleep(step.delay)
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- the two APIs, as calls ---------------------------------------------------------


class _AttackerCalls(_BaseClient):
    def _inject_call(
        self, items: Iterable[int], idempotency_key: str | None
    ) -> _Call[InjectUserResponse]:
        def count(response: InjectUserResponse) -> None:
            self.stats.injections += 1
            self.stats.injected_items += response.n_items

        return _Call(
            "POST",
            "/inject_user",
            _model(InjectUserResponse),
            json={"items": [int(item) for item in items]},
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
            on_success=count,
        )

    def _topk_call(self, user_id: int, k: int) -> _Call[TopKResponse]:
        def count(_: TopKResponse) -> None:
            self.stats.queries += 1

        return _Call(
            "GET", f"/topk/{int(user_id)}", _model(TopKResponse), params={"k": k}, on_success=count
        )


class _AdminCalls(_BaseClient):
    @staticmethod
    def _create_world_call(
        n_pretend_users: int,
        seed: int,
        budgets: Budgets | dict[str, int] | None,
        defence: Defence = "none",
        defence_threshold: float | None = None,
    ) -> _Call[WorldCreated]:
        body: dict[str, Any] = {"n_pretend_users": n_pretend_users, "seed": seed}
        if budgets is not None:
            body["budgets"] = Budgets.model_validate(budgets).model_dump()
        if defence != "none":  # a server without defences keeps taking the body
            body["defence"] = defence
            if defence_threshold is not None:
                body["defence_threshold"] = defence_threshold
        # not idempotent: a lost answer may have created a world, so never resent blindly
        return _Call("POST", "/admin/worlds", _model(WorldCreated), json=body, idempotent=False)

    @staticmethod
    def _list_worlds_call() -> _Call[list[WorldUsage]]:
        return _Call("GET", "/admin/worlds", _models(WorldUsage))

    @staticmethod
    def _usage_call(world_id: str) -> _Call[WorldUsage]:
        return _Call("GET", f"/admin/worlds/{world_id}/usage", _model(WorldUsage))

    @staticmethod
    def _reset_call(world_id: str, restore_budgets: bool) -> _Call[WorldUsage]:
        return _Call(
            "POST",
            f"/admin/worlds/{world_id}/reset",
            _model(WorldUsage),
            json={"restore_budgets": restore_budgets},
        )

    @staticmethod
    def _start_retrain_call(
        world_id: str, epochs: int, wait_for_place: bool = False
    ) -> _Call[RetrainJob]:
        # not resent after a lost answer: it may have started a job (a 429 too-many-jobs
        # started nothing and is retried, after the server's Retry-After)
        return _Call(
            "POST",
            f"/admin/worlds/{world_id}/retrain",
            _model(RetrainJob),
            json={"epochs": epochs},
            idempotent=False,
            wait_for_place=wait_for_place,
        )

    @staticmethod
    def _retrain_job_call(world_id: str, job_id: str) -> _Call[RetrainJob]:
        return _Call("GET", f"/admin/worlds/{world_id}/retrain/{job_id}", _model(RetrainJob))

    @staticmethod
    def _cancel_retrain_call(world_id: str, job_id: str) -> _Call[RetrainJob]:
        return _Call("DELETE", f"/admin/worlds/{world_id}/retrain/{job_id}", _model(RetrainJob))

    @staticmethod
    def _poll_delays(cap: float) -> Iterator[float]:
        """Waits between looks at a job: short first (a fine-tune of a small model ends
        in a second), then every ``cap`` seconds."""
        for attempt in itertools.count():
            yield min(cap, POLL_FIRST * 2**attempt)

    @staticmethod
    def _succeeded(job: RetrainJob) -> RetrainJob:
        if job.status != "succeeded":
            raise RetrainError(job)
        return job

    @staticmethod
    def _delete_call(world_id: str) -> _Call[None]:
        return _Call("DELETE", f"/admin/worlds/{world_id}", lambda response: None)

    @staticmethod
    def _injections_call(world_id: str) -> _Call[list[InjectedProfile]]:
        return _Call("GET", f"/admin/worlds/{world_id}/injections", _models(InjectedProfile))

    @staticmethod
    def _evaluate_call(
        world_id: str, target_items: Sequence[int], protocols: Sequence[Protocol]
    ) -> _Call[EvaluationReport]:
        return _Call(
            "POST",
            f"/admin/worlds/{world_id}/evaluate",
            _model(EvaluationReport),
            json={"target_items": [int(i) for i in target_items], "protocols": list(protocols)},
        )

    @staticmethod
    def _detect_call(
        world_id: str, detector: DetectorName, threshold: float | None, include_users: bool
    ) -> _Call[DetectionReport]:
        # validated here with the server's model: a bad argument never leaves the client
        body = DetectRequest(detector=detector, threshold=threshold, include_users=include_users)
        return _Call(
            "POST",
            f"/admin/worlds/{world_id}/detect",
            _model(DetectionReport),
            json=body.model_dump(),
        )

    @staticmethod
    def _model_info_call() -> _Call[ModelInfo]:
        return _Call("GET", "/admin/model", _model(ModelInfo))


# --- the public clients ---------------------------------------------------------------


class Client(_AttackerCalls, _SyncHTTP):
    """The attacker's view of the target: inject users, read top-k lists.

    >>> with Client("http://127.0.0.1:8000", api_key="ca_...") as client:
    ...     user = client.inject_user([12, 7, 99]).user_id
    ...     client.topk(user, k=20).items
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        retry_seed: int | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        super().__init__(
            base_url,
            {"X-API-Key": api_key},
            timeout,
            max_retries,
            transport,
            retry_seed,
            max_retry_after,
        )

    def inject_user(
        self, items: Iterable[int], idempotency_key: str | None = None
    ) -> InjectUserResponse:
        """Inject a user holding ``items`` (target ids, oldest first). Retries reuse one
        ``Idempotency-Key`` (generated if not given), so nothing is injected twice."""
        return self._execute(self._inject_call(items, idempotency_key))

    def topk(self, user_id: int, k: int = 10) -> TopKResponse:
        """The user's top-``k`` items, best first. One call is one query of the budget."""
        return self._execute(self._topk_call(user_id, k))


class AsyncClient(_AttackerCalls, _AsyncHTTP):
    """:class:`Client` for asyncio; :meth:`topk_many` queries many users concurrently."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_seed: int | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        super().__init__(
            base_url,
            {"X-API-Key": api_key},
            timeout,
            max_retries,
            transport,
            retry_seed,
            max_retry_after,
        )

    async def inject_user(
        self, items: Iterable[int], idempotency_key: str | None = None
    ) -> InjectUserResponse:
        """See :meth:`Client.inject_user`."""
        return await self._execute(self._inject_call(items, idempotency_key))

    async def topk(self, user_id: int, k: int = 10) -> TopKResponse:
        """See :meth:`Client.topk`."""
        return await self._execute(self._topk_call(user_id, k))

    async def topk_many(self, user_ids: Iterable[int], k: int = 10) -> list[TopKResponse]:
        """Top-``k`` of every user, the queries in flight together, answers in order."""
        return list(await asyncio.gather(*(self.topk(user, k) for user in user_ids)))


class AdminClient(_AdminCalls, _SyncHTTP):
    """Experiment control: create, reset, delete and evaluate worlds (admin token)."""

    def __init__(
        self,
        base_url: str,
        admin_token: str,
        *,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        retry_seed: int | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        super().__init__(
            base_url,
            {"Authorization": f"Bearer {admin_token}"},
            timeout,
            max_retries,
            transport,
            retry_seed,
            max_retry_after,
        )

    def create_world(
        self,
        n_pretend_users: int = 50,
        seed: int = 0,
        budgets: Budgets | dict[str, int] | None = None,
        defence: Defence = "none",
        defence_threshold: float | None = None,
    ) -> WorldCreated:
        """A new world: its attacker key (shown once), pretend users and budgets; with a
        ``defence`` (a detector's name), injections it flags are quarantined."""
        return self._execute(
            self._create_world_call(n_pretend_users, seed, budgets, defence, defence_threshold)
        )

    def list_worlds(self) -> list[WorldUsage]:
        return self._execute(self._list_worlds_call())

    def usage(self, world_id: str) -> WorldUsage:
        """Budgets, what is used and left, lifetime totals."""
        return self._execute(self._usage_call(world_id))

    def reset_world(self, world_id: str, restore_budgets: bool = False) -> WorldUsage:
        """Drop the world's injections (and, if asked, zero its budget counters)."""
        return self._execute(self._reset_call(world_id, restore_budgets))

    def start_retrain(self, world_id: str, epochs: int = 3) -> RetrainJob:
        """Start a retrain job of the world; it runs in the background."""
        return self._execute(self._start_retrain_call(world_id, epochs))

    def retrain_job(self, world_id: str, job_id: str) -> RetrainJob:
        """The job's status now."""
        return self._execute(self._retrain_job_call(world_id, job_id))

    def cancel_retrain(self, world_id: str, job_id: str) -> RetrainJob:
        """Cancel an unfinished job; answered once it has stopped."""
        return self._execute(self._cancel_retrain_call(world_id, job_id))

    def retrain_world(
        self, world_id: str, epochs: int = 3, *, poll_interval: float = POLL_CAP
    ) -> RetrainJob:
        """Fine-tune the model on the world's polluted graph (scheduled retraining) and
        wait for it: a job started (waiting for a place while the server has too many),
        then polled until it finished (seconds to minutes). The succeeded job;
        :class:`RetrainError` if it failed or was cancelled."""
        job = self._execute(self._start_retrain_call(world_id, epochs, wait_for_place=True))
        delays = self._poll_delays(poll_interval)
        while not job.finished:
            time.sleep(next(delays))
            job = self.retrain_job(world_id, job.job_id)
        return self._succeeded(job)

    def delete_world(self, world_id: str) -> None:
        return self._execute(self._delete_call(world_id))

    def injections(self, world_id: str) -> list[InjectedProfile]:
        """Every profile injected into the world, in order."""
        return self._execute(self._injections_call(world_id))

    def evaluate(
        self,
        world_id: str,
        target_items: Sequence[int],
        protocols: Sequence[Protocol] = PROTOCOLS,
    ) -> EvaluationReport:
        """HR@K / NDCG@K of the targets, clean model vs world, under ``protocols``
        ('sampled': among 100 sampled items, much cheaper; 'full': whole catalogue)."""
        return self._execute(self._evaluate_call(world_id, target_items, protocols))

    def detect(
        self,
        world_id: str,
        detector: DetectorName,
        threshold: float | None = None,
        include_users: bool = True,
    ) -> DetectionReport:
        """A shilling detector's verdict on the world's users (scores, flags) and its
        precision, recall, F1 and ROC-AUC against the injected users."""
        return self._execute(self._detect_call(world_id, detector, threshold, include_users))

    def model_info(self) -> ModelInfo:
        return self._execute(self._model_info_call())


class AsyncAdminClient(_AdminCalls, _AsyncHTTP):
    """:class:`AdminClient` for asyncio."""

    def __init__(
        self,
        base_url: str,
        admin_token: str,
        *,
        timeout: float = 120.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_seed: int | None = None,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
    ) -> None:
        super().__init__(
            base_url,
            {"Authorization": f"Bearer {admin_token}"},
            timeout,
            max_retries,
            transport,
            retry_seed,
            max_retry_after,
        )

    async def create_world(
        self,
        n_pretend_users: int = 50,
        seed: int = 0,
        budgets: Budgets | dict[str, int] | None = None,
        defence: Defence = "none",
        defence_threshold: float | None = None,
    ) -> WorldCreated:
        """See :meth:`AdminClient.create_world`."""
        return await self._execute(
            self._create_world_call(n_pretend_users, seed, budgets, defence, defence_threshold)
        )

    async def list_worlds(self) -> list[WorldUsage]:
        return await self._execute(self._list_worlds_call())

    async def usage(self, world_id: str) -> WorldUsage:
        """See :meth:`AdminClient.usage`."""
        return await self._execute(self._usage_call(world_id))

    async def reset_world(self, world_id: str, restore_budgets: bool = False) -> WorldUsage:
        """See :meth:`AdminClient.reset_world`."""
        return await self._execute(self._reset_call(world_id, restore_budgets))

    async def start_retrain(self, world_id: str, epochs: int = 3) -> RetrainJob:
        """See :meth:`AdminClient.start_retrain`."""
        return await self._execute(self._start_retrain_call(world_id, epochs))

    async def retrain_job(self, world_id: str, job_id: str) -> RetrainJob:
        """See :meth:`AdminClient.retrain_job`."""
        return await self._execute(self._retrain_job_call(world_id, job_id))

    async def cancel_retrain(self, world_id: str, job_id: str) -> RetrainJob:
        """See :meth:`AdminClient.cancel_retrain`."""
        return await self._execute(self._cancel_retrain_call(world_id, job_id))

    async def retrain_world(
        self, world_id: str, epochs: int = 3, *, poll_interval: float = POLL_CAP
    ) -> RetrainJob:
        """See :meth:`AdminClient.retrain_world`."""
        job = await self._execute(self._start_retrain_call(world_id, epochs, wait_for_place=True))
        delays = self._poll_delays(poll_interval)
        while not job.finished:
            await asyncio.sleep(next(delays))
            job = await self.retrain_job(world_id, job.job_id)
        return self._succeeded(job)

    async def delete_world(self, world_id: str) -> None:
        return await self._execute(self._delete_call(world_id))

    async def injections(self, world_id: str) -> list[InjectedProfile]:
        """See :meth:`AdminClient.injections`."""
        return await self._execute(self._injections_call(world_id))

    async def evaluate(
        self,
        world_id: str,
        target_items: Sequence[int],
        protocols: Sequence[Protocol] = PROTOCOLS,
    ) -> EvaluationReport:
        """See :meth:`AdminClient.evaluate`."""
        return await self._execute(self._evaluate_call(world_id, target_items, protocols))

    async def detect(
        self,
        world_id: str,
        detector: DetectorName,
        threshold: float | None = None,
        include_users: bool = True,
    ) -> DetectionReport:
        """See :meth:`AdminClient.detect`."""
        return await self._execute(self._detect_call(world_id, detector, threshold, include_users))

    async def model_info(self) -> ModelInfo:
        return await self._execute(self._model_info_call())
