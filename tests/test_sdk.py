"""The attacker SDK against the real service: in-process (httpx over ASGI) and over a real
uvicorn process, its error hierarchy, and its retries under injected faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

import attacker_client._client
from attacker_client import (
    AdminClient,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncAdminClient,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RetrainError,
    UnprocessableEntityError,
)
from attacker_client._transport import KeepAliveTransport
from shared.process import ServerProcess, free_port
from shared.schemas import TopKResponse
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import (
    ADMIN_TOKEN,
    IN_PROCESS_URL,
    running_app,
    settings_for,
    tiny_server,
)

DATA = tiny_data()
# a fault: given the request and a way to send it for real, the response or an exception
Fault = Callable[[httpx.Request, Callable[[], httpx.Response]], httpx.Response]


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[AdminClient]:
    with AdminClient(server.url, ADMIN_TOKEN) as client:
        yield client


class FaultyTransport(httpx.BaseTransport):
    """Sends requests for real, except that the next faults queued for a (method, path
    prefix) decide what the client sees. Counts what reaches the wire."""

    def __init__(self, faults: dict[tuple[str, str], list[Fault]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.faults = faults
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        for (method, prefix), queue in self.faults.items():
            if request.method == method and request.url.path.startswith(prefix) and queue:
                return queue.pop(0)(request, lambda: self._forward(request))
        return self._forward(request)

    def _forward(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        return response


def drop_answer(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    """The server gets and commits the request; its answer is lost on the way back."""
    send()
    raise httpx.ReadError("connection reset after the request was sent", request=request)


def answer(status: int, kind: str, **headers: str) -> Fault:
    def fault(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
        problem = {"type": kind, "title": kind, "status": status, "detail": f"injected {kind}"}
        return httpx.Response(status, json=problem, headers=headers, request=request)

    return fault


def raise_(error: type[httpx.TransportError]) -> Fault:
    def fault(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
        raise error("injected", request=request)

    return fault


def test_sync_client_round_trip_and_errors(server: ServerProcess, admin: AdminClient) -> None:
    world = admin.create_world(n_pretend_users=20, seed=4)
    assert len(world.pretend_users) == 20
    with Client(server.url, world.api_key) as client:
        injected = client.inject_user([5, 9, 2], idempotency_key="one")
        assert injected.user_id == DATA.n_users and injected.n_items == 3
        assert client.inject_user([5, 9, 2], idempotency_key="one") == injected
        top = client.topk(injected.user_id, k=7)
        assert len(top.items) == 7 and not {5, 9, 2} & set(top.items)
        assert client.stats.queries == 1 and client.stats.injections == 2
        with pytest.raises(NotFoundError, match="no user"):
            client.topk(10**6)
        with pytest.raises(UnprocessableEntityError, match=str(DATA.n_items + 3)):
            client.inject_user([1, DATA.n_items + 3])
        with pytest.raises(ConflictError, match="'one'"):
            client.inject_user([1, 2], idempotency_key="one")
        assert client.stats.retries == 0  # none of these is retried
    with Client(server.url, "ca_wrong") as stranger, pytest.raises(AuthenticationError):
        stranger.topk(world.pretend_users[0])
    with AdminClient(server.url, world.api_key) as impostor, pytest.raises(PermissionDeniedError):
        impostor.list_worlds()
    usage = admin.usage(world.world_id)
    assert usage.used.injections == 1 and usage.used.queries == 1
    assert [p.items for p in admin.injections(world.world_id)] == [[5, 9, 2]]
    report = admin.evaluate(world.world_id, [DATA.n_items - 1])
    assert report.targets[0].item == DATA.n_items - 1
    verdict = admin.detect(world.world_id, "iforest", include_users=False)
    assert verdict.n_injected == 1 and verdict.users is None
    with pytest.raises(ValueError, match="threshold"):  # refused before it is sent
        admin.detect(world.world_id, "iforest", threshold=True)
    assert admin.reset_world(world.world_id).injected_users == 0
    assert admin.model_info().n_items == DATA.n_items
    admin.delete_world(world.world_id)
    assert world.world_id not in {w.world_id for w in admin.list_worlds()}


@pytest.mark.parametrize("where", ["in-process", "uvicorn"])
def test_async_clients(where: str, server: ServerProcess, artifact: Path, tmp_path: Path) -> None:
    async def scenario(url: str, transport: httpx.AsyncBaseTransport | None) -> None:
        async with AsyncAdminClient(url, ADMIN_TOKEN, transport=transport) as admin:
            world = await admin.create_world(budgets={"queries": 60})
            async with AsyncClient(url, world.api_key, transport=transport) as client:
                lists = await client.topk_many(world.pretend_users, k=5)
                assert [t.user_id for t in lists] == world.pretend_users
                await client.inject_user([3, 1])
                with pytest.raises(QuotaExceededError):
                    await client.topk_many(world.pretend_users[:15], k=5)
                assert client.stats.queries == 60 and client.stats.injected_items == 2
            usage = await admin.usage(world.world_id)
            assert usage.used.queries == 60 and usage.remaining.queries == 0

    async def in_process() -> None:
        async with running_app(settings_for(artifact, tmp_path / "l.db")) as app:
            await scenario(IN_PROCESS_URL, httpx.ASGITransport(app=app))

    asyncio.run(in_process() if where == "in-process" else scenario(server.url, None))


def test_a_lost_answer_after_commit_injects_once(server: ServerProcess, admin: AdminClient) -> None:
    world = admin.create_world()
    transport = FaultyTransport({("POST", "/inject_user"): [drop_answer, drop_answer]})
    with Client(server.url, world.api_key, transport=transport, retry_seed=0) as client:
        injected = client.inject_user([4, 8, 15, 16])
    assert transport.sent == ["POST /inject_user"] * 3
    assert client.stats.retries == 2 and client.stats.injections == 1
    usage = admin.usage(world.world_id)
    assert usage.used.injections == 1 and usage.injected_users == 1
    assert [p.user_id for p in admin.injections(world.world_id)] == [injected.user_id]


def test_rate_limited_waits_for_retry_after(
    server: ServerProcess,
    admin: AdminClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = admin.create_world()
    user = world.pretend_users[0]
    limited = answer(429, "rate-limited", **{"Retry-After": "2"})
    transport = FaultyTransport({("GET", "/topk"): [limited]})
    waits: list[float] = []  # what the client slept, not how long the test took
    monkeypatch.setattr(attacker_client._client, "time", SimpleNamespace(sleep=waits.append))
    with (
        caplog.at_level("INFO", logger="attacker_client"),
        Client(server.url, world.api_key, transport=transport) as client,
    ):
        client.topk(user)
    assert waits == [2.0]
    assert client.stats.retries == 1 and client.stats.queries == 1
    [logged] = [r.getMessage() for r in caplog.records if r.name == "attacker_client"]
    assert logged.startswith(f"retry 1 of 3 of GET /topk/{user} in 2.00 s: 429")


def test_a_retry_after_beyond_the_cap_is_raised_at_once(
    server: ServerProcess, admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server asking for an hour's wait gets its 429 raised, not a client asleep for an
    hour; a client that allows it waits."""
    world = admin.create_world()
    user = world.pretend_users[0]
    waits: list[float] = []
    monkeypatch.setattr(attacker_client._client, "time", SimpleNamespace(sleep=waits.append))
    hour = answer(429, "rate-limited", **{"Retry-After": "3600"})
    transport = FaultyTransport({("GET", "/topk"): [hour]})
    with Client(server.url, world.api_key, transport=transport) as client:
        with pytest.raises(RateLimitError) as raised:
            client.topk(user)
        assert raised.value.retry_after == 3600.0
    assert waits == [] and len(transport.sent) == 1 and client.stats.retries == 0
    transport = FaultyTransport({("GET", "/topk"): [hour]})
    with Client(server.url, world.api_key, transport=transport, max_retry_after=3600) as client:
        client.topk(user)
    assert waits == [3600.0] and client.stats.queries == 1
    with pytest.raises(ValueError, match="max_retry_after"):
        Client(server.url, world.api_key, max_retry_after=-1)


@pytest.mark.parametrize(
    "body", [b"<html>502 from a proxy</html>", b'{"user_id": 3}', b'{"user_id": 3, "items": ["a"]}']
)
def test_a_success_answer_that_is_not_the_apis_is_a_response_validation_error(
    server: ServerProcess, admin: AdminClient, body: bytes
) -> None:
    """Within the SDK's one hierarchy (an APIError), not pydantic's, and never retried."""
    world = admin.create_world()

    def wrong(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
        return httpx.Response(200, content=body, request=request)

    transport = FaultyTransport({("GET", "/topk"): [wrong]})
    with (
        Client(server.url, world.api_key, transport=transport) as client,
        pytest.raises(APIResponseValidationError, match="GET /topk/") as raised,
    ):
        client.topk(world.pretend_users[0])
    assert isinstance(raised.value, APIError) and raised.value.status_code == 200
    assert isinstance(raised.value.__cause__, ValueError)
    assert client.stats.queries == 0 and len(transport.sent) == 1


@pytest.mark.process  # a server process of its own, with a rate limit
def test_a_real_rate_limit_is_waited_out(artifact: Path, tmp_path: Path) -> None:
    """Every 429 the server sent was waited out and retried, and every query answered.
    (How many 429s there are depends on the machine's speed: the test counts them.)"""
    limited = tiny_server(artifact, tmp_path / "l.db", RECSYS_RATE_LIMIT="3/second").start()
    try:
        with AdminClient(limited.url, ADMIN_TOKEN) as admin:
            world = admin.create_world()
        with Client(limited.url, world.api_key) as client:
            for user in world.pretend_users[:7]:
                client.topk(user)
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        metrics = httpx.get(f"{limited.url}/metrics", headers=bearer).text
        series = 'recsys_http_requests_total{method="GET",route="/topk/{user_id}",status="429"}'
        assert client.stats.queries == 7 and client.stats.retries == _counter(metrics, series)
    finally:
        limited.stop()


def _counter(metrics: str, series: str) -> int:
    """A Prometheus counter's value in a /metrics text (0 when the series is absent)."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return int(float(line.split()[-1]))
    return 0


def test_quota_exhaustion_raises_at_once(server: ServerProcess, admin: AdminClient) -> None:
    world = admin.create_world(budgets={"queries": 1})
    transport = FaultyTransport({})
    with Client(server.url, world.api_key, transport=transport) as client:
        client.topk(world.pretend_users[0])
        with pytest.raises(QuotaExceededError, match="query budget") as raised:
            client.topk(world.pretend_users[0])
    assert raised.value.problem is not None and raised.value.problem.type == "quota-exceeded"
    assert transport.sent == ["GET /topk/" + str(world.pretend_users[0])] * 2  # one each
    assert client.stats.retries == 0


def test_server_errors_are_retried_then_succeed(server: ServerProcess, admin: AdminClient) -> None:
    world = admin.create_world()
    errors = [answer(503, "not-ready"), answer(500, "internal-error")]
    transport = FaultyTransport({("GET", "/topk"): errors})
    with Client(server.url, world.api_key, transport=transport, retry_seed=1) as client:
        assert len(client.topk(world.pretend_users[0], k=3).items) == 3
    assert client.stats.retries == 2 and len(transport.sent) == 3
    always = FaultyTransport({("GET", "/topk"): [answer(502, "bad-gateway")] * 5})
    with (
        Client(server.url, world.api_key, transport=always, max_retries=2) as client,
        pytest.raises(InternalServerError, match="injected bad-gateway"),
    ):
        client.topk(world.pretend_users[0])
    assert len(always.sent) == 3


def test_connection_errors_and_timeouts(server: ServerProcess) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with (
        Client(closed, "ca_x", max_retries=2, retry_seed=2) as client,
        pytest.raises(APIConnectionError),
    ):
        client.topk(1)
    assert client.stats.requests == 3 and client.stats.retries == 2
    timeouts = FaultyTransport({("GET", "/topk"): [raise_(httpx.ReadTimeout)] * 3})
    with (
        Client(server.url, "ca_x", transport=timeouts, max_retries=2) as client,
        pytest.raises(APITimeoutError),
    ):
        client.topk(1)
    # creating a world is not idempotent: a lost answer is not resent blindly
    lost = FaultyTransport({("POST", "/admin/worlds"): [raise_(httpx.ConnectError)]})
    with (
        AdminClient(server.url, ADMIN_TOKEN, transport=lost) as admin,
        pytest.raises(APIConnectionError),
    ):
        admin.create_world()
    assert lost.sent == ["POST /admin/worlds"]


class Together(httpx.AsyncBaseTransport):
    """Holds every request until ``expected`` of them are in flight at once, then sends
    them all (over ``inner``): a client that sent them one after another never gets its
    first answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, expected: int) -> None:
        self.inner, self.expected = inner, expected
        self.in_flight = self.most_in_flight = 0
        self.all_in = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.expected:
            self.all_in.set()
        try:
            await asyncio.wait_for(self.all_in.wait(), timeout=120)  # a hang guard only
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_reward_steps_queries_are_in_flight_together(
    server: ServerProcess, admin: AdminClient
) -> None:
    """One reward step: the 50 pretend users' top-k, all 50 queries in flight at once over
    the SDK's keep-alive sockets, the answers in order. (How much faster that is than one
    at a time is measured by benchmarks/client_transport.py, not here.)"""
    world = admin.create_world(n_pretend_users=50)
    users = world.pretend_users
    together = Together(KeepAliveTransport(max_connections=8), expected=len(users))

    async def step() -> list[TopKResponse]:
        async with AsyncClient(server.url, world.api_key, transport=together) as client:
            return await client.topk_many(users, k=20)

    answers = asyncio.run(step())
    assert together.most_in_flight == len(users)
    assert [a.user_id for a in answers] == users and all(len(a.items) == 20 for a in answers)
    assert admin.usage(world.world_id).used.queries == len(users)


def test_the_readme_example_runs(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## The attacker's SDK", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("COPYATTACK_SERVER", server.url)  # the notebook's and the CLI's name
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", ADMIN_TOKEN)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["client"].stats.injections == 1
    assert namespace["report"].targets[0].item == 99


def test_the_sdk_refuses_what_the_server_refuses() -> None:
    """The shared request models are strict on both sides: the SDK refuses a budget of
    ``True`` or ``5.0`` before sending, as the server would."""
    wrong_budgets: tuple[Any, ...] = (True, 5.0, "5")
    for wrong in wrong_budgets:
        with pytest.raises(ValidationError, match="queries"):
            AdminClient._create_world_call(50, 0, {"queries": wrong})
    assert AdminClient._create_world_call(50, 0, {"queries": 5}).json["budgets"]["queries"] == 5


def cancelled_job(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    """The job as the server says, except that it ended cancelled."""
    job = send().json() | {"status": "cancelled", "detail": "cancelled while running"}
    return httpx.Response(200, json=job, request=request)


def test_a_retrain_is_a_job_the_admin_client_starts_and_polls(
    server: ServerProcess, admin: AdminClient
) -> None:
    world = admin.create_world()
    path = f"/admin/worlds/{world.world_id}/retrain"
    # refused while the server has too many jobs (nothing started): start_retrain gives
    # up after max_retries, retrain_world waits for a place as long as it takes
    no_place = answer(429, "too-many-jobs", **{"Retry-After": "0"})
    busy = FaultyTransport({("POST", path): [no_place] * 5})
    with AdminClient(server.url, ADMIN_TOKEN, transport=busy, max_retries=1) as client:
        with pytest.raises(RateLimitError, match="injected too-many-jobs"):
            client.start_retrain(world.world_id, epochs=1)
        job = client.retrain_world(world.world_id, epochs=1)
    assert job.status == "succeeded" and job.embedding_epoch == 1
    assert busy.sent[:6] == [f"POST {path}"] * 6
    assert set(busy.sent[6:]) <= {f"GET {path}/{job.job_id}"}
    assert admin.usage(world.world_id).embedding_epoch == 1
    assert admin.retrain_job(world.world_id, job.job_id) == job
    with pytest.raises(ConflictError, match="already succeeded"):
        admin.cancel_retrain(world.world_id, job.job_id)
    # a job that ends without a tuned model is an error naming it
    stopped = FaultyTransport({("GET", f"{path}/"): [cancelled_job]})
    with (
        AdminClient(server.url, ADMIN_TOKEN, transport=stopped) as client,
        pytest.raises(RetrainError, match="cancelled while running") as raised,
    ):
        client.retrain_world(world.world_id, epochs=1)
    assert raised.value.job.status == "cancelled"
