"""The black-box service in-process (httpx over ASGI, lifespan included): the two attacker
routes, worlds, admin, budgets, rate limits, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from recsys_server.app import create_app
from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.ledger import Ledger, LedgerError
from recsys_server.ratelimit import KeyRateLimiter
from shared.scenario import read_manifest
from shared.schemas import Budgets
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import (
    ADMIN,
    IN_PROCESS_URL,
    TRANSPORTS,
    loaded,
    running_app,
    serving,
    settings_for,
)

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}
DATA = tiny_data()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Every service test runs in-process and against a real uvicorn process."""
    return request.param


async def new_world(client: httpx.AsyncClient, **body: object) -> tuple[dict, dict]:
    response = await client.post("/admin/worlds", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created = response.json()
    return created, {"X-API-Key": created["api_key"]}


async def usage(client: httpx.AsyncClient, world_id: str) -> dict:
    response = await client.get(f"/admin/worlds/{world_id}/usage", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int, kind: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == kind and problem["status"] == status
    for word in words:
        assert word in problem["detail"], problem["detail"]
    return problem


def cold_item() -> int:
    return int(np.argmin(np.bincount(DATA.train[:, 1], minlength=DATA.n_items)))


async def test_world_topk_and_injection(artifact: Path, tmp_path: Path, transport: str) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        world, key = await new_world(client)
        pretend = world["pretend_users"]
        assert len(pretend) == 50 and set(pretend) <= set(DATA.pretend_pool.tolist())
        user = pretend[0]
        first = await client.get(f"/topk/{user}", params={"k": 20}, headers=key)
        assert first.status_code == 200
        items = first.json()["items"]
        held = set(DATA.train[DATA.train[:, 0] == user, 1].tolist())
        assert len(items) == 20 == len(set(items)) and not held & set(items)

        target = cold_item()
        profile = [target, *[i for i in range(DATA.n_items) if i != target][:9]]
        injected = await client.post("/inject_user", json={"items": profile}, headers=key)
        assert injected.status_code == 201, injected.text
        body = injected.json()
        assert body["n_items"] == 10 and body["user_id"] == DATA.n_users
        assert body["remaining"]["injections"] == world["budgets"]["injections"] - 1
        # the new user is visible at once, and its own items are never recommended to it
        own = await client.get(f"/topk/{body['user_id']}", params={"k": 50}, headers=key)
        assert own.status_code == 200 and not set(profile) & set(own.json()["items"])
        # what the server answers equals the model on a fork with the same injection
        expected = tiny_fork_with(artifact, [profile]).topk(user, 20).tolist()
        after = await client.get(f"/topk/{user}", params={"k": 20}, headers=key)
        assert after.json()["items"] == expected
        used = await usage(client, world["world_id"])
        assert used["used"] == {"queries": 3, "injections": 1, "items": 10}
        assert used["injected_users"] == 1 and used["embedding_epoch"] == 1


def tiny_fork_with(artifact: Path, profiles: list[list[int]]):
    loaded = ModelArtifact.load(artifact)
    state = loaded.victim.serving_state(DATA)
    for profile in profiles:
        state.add_user(np.asarray(profile))
    return state


async def test_worlds_are_isolated_and_users_outside_a_world_are_not_found(
    artifact: Path, tmp_path: Path, transport: str
) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        first, first_key = await new_world(client, seed=1)
        second, second_key = await new_world(client, seed=2)
        target = cold_item()
        profiles = [list(dict.fromkeys([target, *range(i * 5, i * 5 + 5)])) for i in range(8)]
        attacked = tiny_fork_with(artifact, profiles)
        clean = tiny_fork_with(artifact, [])
        # a user both worlds may query whose list the injections change
        shared = set(first["pretend_users"]) & set(second["pretend_users"])
        user = next(
            u for u in sorted(shared) if attacked.topk(u, 30).tolist() != clean.topk(u, 30).tolist()
        )
        for profile in profiles:
            response = await client.post("/inject_user", json={"items": profile}, headers=first_key)
            assert response.status_code == 201
        changed = await client.get(f"/topk/{user}", params={"k": 30}, headers=first_key)
        after = await client.get(f"/topk/{user}", params={"k": 30}, headers=second_key)
        assert changed.json()["items"] == attacked.topk(user, 30).tolist()
        assert after.json()["items"] == clean.topk(user, 30).tolist()  # never sees the first
        injected = DATA.n_users  # the first world's first injected user
        outsider = next(u for u in range(DATA.n_users) if u not in first["pretend_users"])
        answers = [
            await client.get(f"/topk/{u}", headers=second_key) for u in (injected, outsider, 10**9)
        ]
        details = {assert_problem(r, 404, "not-found")["detail"].split()[-1] for r in answers}
        assert len(details) == 3  # the same answer, naming only the id asked for
        assert (await usage(client, second["world_id"]))["used"]["queries"] == 1


async def test_idempotent_injection(artifact: Path, tmp_path: Path, transport: str) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        world, key = await new_world(client)
        headers = {**key, "Idempotency-Key": "episode-1-profile-1"}
        # the same key sent concurrently: one injection, one answer for all
        racing = await asyncio.gather(
            *(
                client.post("/inject_user", json={"items": [1, 2, 3]}, headers=headers)
                for _ in range(5)
            )
        )
        assert {r.status_code for r in racing} == {201}
        assert len({r.json()["user_id"] for r in racing}) == 1
        first = await client.post("/inject_user", json={"items": [1, 2, 3]}, headers=headers)
        again = await client.post("/inject_user", json={"items": [1, 2, 3]}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json()["user_id"] == again.json()["user_id"]
        other = await client.post("/inject_user", json={"items": [4, 5]}, headers=headers)
        assert_problem(other, 409, "conflict", "episode-1-profile-1")
        used = await usage(client, world["world_id"])
        assert used["used"]["injections"] == 1 and used["injected_users"] == 1
        assert first.json()["user_id"] == racing[0].json()["user_id"]
        exported = await client.get(f"/admin/worlds/{world['world_id']}/injections", headers=ADMIN)
        assert [(p["items"], p["idempotency_key"]) for p in exported.json()] == [
            ([1, 2, 3], "episode-1-profile-1")
        ]


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    artifact: Path, tmp_path: Path, transport: str
) -> None:
    settings = settings_for(artifact, tmp_path / "ledger.db", max_profile_length=20, max_k=30)
    async with serving(settings, transport) as client:
        world, key = await new_world(client)
        user = world["pretend_users"][0]
        inject_cases = [
            ({"items": [1, DATA.n_items + 5]}, f"{DATA.n_items + 5}"),
            ({"items": []}, "items"),
            ({"items": list(range(21))}, "at most 20"),
            ({"items": [3, 4, 3]}, "repeated"),
            ({"items": ["x"]}, "items"),
            ({"items": [-1]}, "items"),
            ({"items": [1], "extra": 1}, "extra"),
        ]
        cases = [
            (await client.post("/inject_user", json=body, headers=key), word)
            for body, word in inject_cases
        ]
        malformed = {**key, "Content-Type": "application/json"}
        cases.append((await client.post("/inject_user", content=b"{no", headers=malformed), "JSON"))
        for params, path in (({"k": 0}, user), ({"k": 31}, user), ({"k": "ten"}, user), ({}, "a")):
            cases.append(
                (
                    await client.get(f"/topk/{path}", params=params, headers=key),
                    "k" if params else "user_id",
                )
            )
        for response, word in cases:
            assert_problem(response, 422, "validation-error", word)
        bad_world = await client.post(
            "/admin/worlds", json={"n_pretend_users": 10**6}, headers=ADMIN
        )
        assert_problem(bad_world, 422, "validation-error", "pool")
        bad_target = await client.post(
            f"/admin/worlds/{world['world_id']}/evaluate",
            json={"target_items": [DATA.n_items]},
            headers=ADMIN,
        )
        assert_problem(bad_target, 422, "validation-error", str(DATA.n_items))
        used = await usage(client, world["world_id"])
        assert used["used"] == {"queries": 0, "injections": 0, "items": 0}
        assert used["injected_users"] == 0


WRONG_TYPES = [True, False, "3", 3.0, None]  # JSON values that are not integers


async def test_values_of_another_json_type_are_refused_and_nothing_is_counted(
    artifact: Path, tmp_path: Path
) -> None:
    """``true`` is not item 1, ``"3"`` not item 3, ``3.0`` not an integer: every integer
    (and boolean) field of every request body is strict, and so are the path's and the
    query's integers; a refusal names the field."""
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await new_world(client)
        base = f"/admin/worlds/{world['world_id']}"
        cases: list[tuple[str, dict, dict, str]] = []
        for wrong in WRONG_TYPES:
            cases += [
                ("/inject_user", {"items": [wrong]}, key, "items.0"),
                ("/inject_user", {"items": [5, wrong]}, key, "items.1"),
                (f"{base}/evaluate", {"target_items": [wrong]}, ADMIN, "target_items.0"),
                (f"{base}/retrain", {"epochs": wrong}, ADMIN, "epochs"),
                ("/admin/worlds", {"n_pretend_users": wrong}, ADMIN, "n_pretend_users"),
                ("/admin/worlds", {"seed": wrong}, ADMIN, "seed"),
            ]
            cases += [
                ("/admin/worlds", {"budgets": {name: wrong}}, ADMIN, f"budgets.{name}")
                for name in ("queries", "injections", "items")
            ]
        for wrong in (1, 0, "true", None):
            cases.append((f"{base}/reset", {"restore_budgets": wrong}, ADMIN, "restore_budgets"))
        for path, body, headers, field in cases:
            response = await client.post(path, json=body, headers=headers)
            problem = assert_problem(response, 422, "validation-error", f"body.{field}")
            assert problem["errors"][0]["loc"] == ["body", *_loc(field)], (body, problem)
        # the integers of a URL arrive as text: plain decimal digits only
        user = world["pretend_users"][0]
        for path, params, field in (
            (f"/topk/{user}.0", {}, "user_id"),
            (f"/topk/+{user}", {}, "user_id"),
            (f"/topk/%20{user}", {}, "user_id"),
            (f"/topk/{user}", {"k": "2.0"}, "k"),
            (f"/topk/{user}", {"k": "1_0"}, "k"),
            (f"/topk/{user}", {"k": "1.5"}, "k"),
            (f"/topk/{user}", {"k": "true"}, "k"),
            ("/topk/abc", {}, "user_id"),
        ):
            response = await client.get(path, params=params, headers=key)
            assert_problem(response, 422, "validation-error", field, "decimal digits")
        used = await usage(client, world["world_id"])
        assert used["used"] == used["total"] == {"queries": 0, "injections": 0, "items": 0}
        assert used["injected_users"] == used["embedding_epoch"] == 0
        assert (await client.get(f"{base}/injections", headers=ADMIN)).json() == []
        worlds = (await client.get("/admin/worlds", headers=ADMIN)).json()
        assert [w["world_id"] for w in worlds] == [world["world_id"]]


# the rate-limit headers that move from one request to the next
MOVING_HEADERS = {"ratelimit", "x-ratelimit-remaining", "x-ratelimit-reset"}


async def test_a_plain_topk_request_is_answered_as_fastapi_answers_it(
    artifact: Path, tmp_path: Path
) -> None:
    """/topk reads a plain request (the user id and ``k`` in digits, no other query) by
    hand and leaves anything else to FastAPI (docs/service.md, "Service speed"). An unknown query
    parameter sends a request FastAPI's way, which ignores it: both ways give the same
    status, body and headers, and count the same, for every outcome of a plain request."""
    settings = settings_for(artifact, tmp_path / "ledger.db", max_k=30)
    async with serving(settings) as client:
        world, key = await new_world(client, budgets={"queries": 10})
        user = world["pretend_users"][0]
        wrong = {"X-API-Key": "ca_" + "x" * 43}
        cases = [
            (f"/topk/{user}", "", key),  # the default k
            (f"/topk/{user}", "k=1", key),
            (f"/topk/{user}", "k=30", key),  # max_k
            (f"/topk/{user}", "k=007", key),  # what pydantic reads as 7
            (f"/topk/0{user}", "k=5", key),
            (f"/topk/{2**53}", "k=5", key),  # the largest id: no such user
            (f"/topk/{user}", "k=5", {}),
            (f"/topk/{user}", "k=5", wrong),
            (f"/topk/{user}", "k=5", key),  # the budget of 10 is spent by now
        ]
        for path, query, headers in cases:
            plain = await client.get(f"{path}?{query}" if query else path, headers=headers)
            resolved = await client.get(
                f"{path}?{query}&via=fastapi" if query else f"{path}?via=fastapi", headers=headers
            )
            assert (plain.status_code, plain.content) == (resolved.status_code, resolved.content)
            assert plain.headers.keys() == resolved.headers.keys()
            for name in plain.headers.keys() - MOVING_HEADERS:
                assert plain.headers[name] == resolved.headers[name], name
            if "x-ratelimit-remaining" in plain.headers:
                assert int(plain.headers["x-ratelimit-remaining"]) == (
                    int(resolved.headers["x-ratelimit-remaining"]) + 1
                )
        assert_problem(plain, 429, "quota-exceeded")
        used = await usage(client, world["world_id"])
        assert used["used"]["queries"] == 10


def _loc(field: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in field.split(".")]


class CountedBody:
    """A streamed request body that counts the chunks the server pulled."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.pulled = chunk, chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


MIB = b" " * 2**20


async def test_credentials_are_checked_before_the_body_is_read(
    artifact: Path, tmp_path: Path
) -> None:
    """A request without valid credentials is answered 401 (or 403) before one byte of
    its body is read, however large it claims or turns out to be."""
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await new_world(client)
        evaluate = f"/admin/worlds/{world['world_id']}/evaluate"
        cases = [
            ("/inject_user", {}, "unauthorized"),
            ("/inject_user", {"X-API-Key": "ca_" + "x" * 43}, "unauthorized"),
            ("/admin/worlds", {}, "unauthorized"),
            ("/admin/worlds", key, "forbidden"),
            (evaluate, {"Authorization": "Bearer not-the-token"}, "unauthorized"),
        ]
        for path, headers, kind in cases:
            for declared in ({}, {"Content-Length": str(100 * len(MIB))}):  # chunked, or not
                body = CountedBody(MIB, 100)
                response = await client.post(
                    path, content=body, headers={**headers, **declared, **JSON}
                )
                assert_problem(response, 403 if kind == "forbidden" else 401, kind)
                assert body.pulled == 0, (path, headers)
        assert (await client.get("/admin/worlds", headers=ADMIN)).json()[0]["used"]["items"] == 0


async def test_a_body_past_the_limit_is_413_and_changes_nothing(
    artifact: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        artifact, tmp_path / "ledger.db", max_body_bytes=4096, rate_limit="1000/minute"
    )
    async with serving(settings) as client:
        world, key = await new_world(client)
        evaluate = f"/admin/worlds/{world['world_id']}/evaluate"
        # a Content-Length past the limit: refused before a byte is read
        body = CountedBody(MIB, 100)
        declared = {"Content-Length": str(100 * len(MIB)), **JSON}
        response = await client.post("/inject_user", content=body, headers={**key, **declared})
        assert_problem(response, 413, "content-too-large", "4096")
        assert body.pulled == 0
        # no length (chunked) or a lie: read only until the limit is passed
        for path, headers in (("/inject_user", key), (evaluate, ADMIN)):
            body = CountedBody(b" " * 1000, 100)
            response = await client.post(path, content=body, headers={**headers, **JSON})
            assert_problem(response, 413, "content-too-large", "4096")
            assert body.pulled == 5
        lie = {**key, **JSON, "Content-Length": "10"}
        response = await client.post(
            "/inject_user", content=CountedBody(b" " * 1000, 5), headers=lie
        )
        assert_problem(response, 413, "content-too-large", "4096")
        # at the limit: read, parsed, answered
        padded = json.dumps({"items": [1, 2]}).encode().ljust(4096)
        injected = await client.post("/inject_user", content=padded, headers={**key, **JSON})
        assert injected.status_code == 201
        # four requests with the key passed its rate limit, each counted once (the guard
        # and the route's dependency share one decision)
        assert injected.headers["X-RateLimit-Remaining"] == "996"
        used = await usage(client, world["world_id"])
        assert used["used"] == {"queries": 0, "injections": 1, "items": 2}


def test_the_default_body_limit_holds_the_longest_profile_pretty_printed(
    artifact: Path, tmp_path: Path
) -> None:
    for length, n_items in ((1_000, 10), (1_000, 99_999), (20_000, 99_999), (10, 99_999)):
        settings = settings_for(artifact, tmp_path / "l.db", max_profile_length=length)
        longest = min(length, n_items)
        ids = list(range(n_items - longest, n_items))  # the widest ids
        body = json.dumps({"items": ids}, indent=4).encode()
        assert len(body) <= settings.body_limit(n_items) <= 16 * longest + 4096
        evaluate = json.dumps({"target_items": ids[:100], "protocols": ["sampled", "full"]})
        assert len(evaluate) <= settings.body_limit(n_items)
    assert settings_for(artifact, tmp_path / "l.db", max_body_bytes=5000).body_limit(10) == 5000


async def test_authentication(artifact: Path, tmp_path: Path, transport: str) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        world, key = await new_world(client)
        user = world["pretend_users"][0]
        assert_problem(await client.get(f"/topk/{user}"), 401, "unauthorized", "X-API-Key")
        wrong = {"X-API-Key": "ca_" + "x" * 43}
        assert_problem(await client.get(f"/topk/{user}", headers=wrong), 401, "unauthorized")
        assert_problem(await client.get(f"/topk/{user}", headers=ADMIN), 401, "unauthorized")
        assert_problem(await client.get("/admin/worlds"), 401, "unauthorized")
        as_bearer = {"Authorization": f"Bearer {key['X-API-Key']}"}
        for headers in (key, as_bearer):
            response = await client.get("/admin/worlds", headers=headers)
            assert_problem(response, 403, "forbidden", "attacker key")
        bad_admin = {"Authorization": "Bearer not-the-token"}
        assert_problem(await client.get("/admin/worlds", headers=bad_admin), 401, "unauthorized")
        # the key is stored hashed: no ledger file ever holds it
        for path in tmp_path.glob("ledger.db*"):
            assert key["X-API-Key"].encode() not in path.read_bytes()


async def test_budgets_are_exact_under_concurrency(
    artifact: Path, tmp_path: Path, transport: str
) -> None:
    settings = settings_for(artifact, tmp_path / "ledger.db", rate_limit="100000/second")
    async with serving(settings, transport) as client:
        budgets = {"queries": 50, "injections": 3, "items": 7}
        world, key = await new_world(client, budgets=budgets)
        user = world["pretend_users"][0]
        responses = await asyncio.gather(
            *(client.get(f"/topk/{user}", params={"k": 5}, headers=key) for _ in range(200))
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 50 and statuses.count(429) == 150
        refused = next(r for r in responses if r.status_code == 429)
        assert_problem(refused, 429, "quota-exceeded", "query budget")
        assert refused.headers["x-should-retry"] == "false"
        assert refused.headers["X-RateLimit-Limit"] == "100000"

        # injections are serialised per world: in sending order, [6, 7, 8] would pass the
        # injection budget but not the item budget (2 + 3 + 3 > 7), [10] the item budget but
        # not the injection budget
        profiles = [[1, 2], [3, 4, 5], [6, 7, 8], [9], [10]]
        answers = []
        for profile in profiles:
            answers.append(await client.post("/inject_user", json={"items": profile}, headers=key))
        assert [r.status_code for r in answers] == [201, 201, 429, 201, 429]
        assert_problem(answers[2], 429, "quota-exceeded", "item budget")
        assert_problem(answers[4], 429, "quota-exceeded", "injection budget")
        # and concurrently, on a fresh budget: exactly as many as the budgets allow
        other, other_key = await new_world(client, budgets={"injections": 4})
        concurrent = await asyncio.gather(
            *(
                client.post("/inject_user", json={"items": [i]}, headers=other_key)
                for i in range(20)
            )
        )
        assert sorted(r.status_code for r in concurrent) == [201] * 4 + [429] * 16
        assert (await usage(client, other["world_id"]))["injected_users"] == 4
        used = await usage(client, world["world_id"])
        assert used["used"] == {"queries": 50, "injections": 3, "items": 6}
        assert used["injected_users"] == 3

        # a reset drops the injections; restoring the budgets zeroes the counters only
        reset = await client.post(
            f"/admin/worlds/{world['world_id']}/reset",
            json={"restore_budgets": True},
            headers=ADMIN,
        )
        assert reset.status_code == 200
        assert reset.json()["used"] == {"queries": 0, "injections": 0, "items": 0}
        assert reset.json()["total"]["queries"] == 50 and reset.json()["injected_users"] == 0
        gone = await client.get(f"/topk/{DATA.n_users}", headers=key)
        assert_problem(gone, 404, "not-found")


@pytest.mark.parametrize("budget", [1, 8, 16, 21])
async def test_a_budget_answers_exactly_its_size_across_leases(
    artifact: Path, tmp_path: Path, transport: str, budget: int
) -> None:
    """Leases of 8 queries: a budget answers exactly its size, whether it ends inside a
    lease or on its boundary, also when the queries arrive at once; then the documented
    429. A refused query counts nothing."""
    settings = settings_for(
        artifact, tmp_path / "ledger.db", rate_limit="100000/second", query_lease=8
    )
    async with serving(settings, transport) as client:
        world, key = await new_world(client, budgets={"queries": budget})
        user = world["pretend_users"][0]
        one_by_one = [await client.get(f"/topk/{user}", headers=key) for _ in range(budget + 3)]
        assert [r.status_code for r in one_by_one] == [200] * budget + [429] * 3
        assert_problem(one_by_one[-1], 429, "quota-exceeded", "query budget")
        spent = await usage(client, world["world_id"])
        assert spent["used"]["queries"] == spent["total"]["queries"] == budget
        assert spent["remaining"]["queries"] == 0

        other, other_key = await new_world(client, budgets={"queries": budget}, seed=1)
        at_once = await asyncio.gather(
            *(
                client.get(f"/topk/{other['pretend_users'][0]}", headers=other_key)
                for _ in range(budget + 20)
            )
        )
        statuses = [r.status_code for r in at_once]
        assert statuses.count(200) == budget and statuses.count(429) == 20
        assert (await usage(client, other["world_id"]))["used"]["queries"] == budget


async def test_queries_are_committed_a_lease_at_a_time(artifact: Path, tmp_path: Path) -> None:
    """One ledger write per lease of 8 queries, not one per query; the ledger counts the
    whole lease before its first query is answered, the usage route what was answered;
    a reset gives the unanswered rest back, so the lifetime total stays exact."""
    settings = settings_for(
        artifact, tmp_path / "ledger.db", rate_limit="100000/second", query_lease=8
    )
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL) as client:
            world, key = await new_world(client, budgets={"queries": 100})
            ledger = app.state.registry.ledger
            user = world["pretend_users"][0]
            writes = ledger._db.total_changes
            for _ in range(11):
                assert (await client.get(f"/topk/{user}", headers=key)).status_code == 200
            assert ledger._db.total_changes - writes == 2  # leases of 8: queries 1 and 9
            assert ledger.world(world["world_id"]).used.queries == 16
            live = await usage(client, world["world_id"])
            assert live["used"]["queries"] == live["total"]["queries"] == 11
            assert live["remaining"]["queries"] == 89
            reset = await client.post(
                f"/admin/worlds/{world['world_id']}/reset",
                json={"restore_budgets": True},
                headers=ADMIN,
            )
            assert reset.json()["used"]["queries"] == 0
            assert reset.json()["total"]["queries"] == 11
            assert ledger.world(world["world_id"]).total.queries == 11


async def test_rate_limit_headers(artifact: Path, tmp_path: Path, transport: str) -> None:
    # a window of a minute: every request of the test falls in it, however slow the machine
    settings = settings_for(artifact, tmp_path / "ledger.db", rate_limit="5/minute")
    async with serving(settings, transport) as client:
        world, key = await new_world(client)
        other, other_key = await new_world(client, seed=3)
        user = world["pretend_users"][0]
        responses = [await client.get(f"/topk/{user}", headers=key) for _ in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        ok, limited = responses[0], responses[-1]
        assert ok.headers["X-RateLimit-Limit"] == "5"
        assert ok.headers["X-RateLimit-Remaining"] == "4"
        assert ok.headers["RateLimit"].startswith("limit=5, remaining=4, reset=")
        assert ok.headers["RateLimit-Policy"] == "5;w=60"
        assert_problem(limited, 429, "rate-limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "x-should-retry" not in limited.headers
        assert (await usage(client, world["world_id"]))["used"]["queries"] == 5
        # the limit is per key
        other_user = other["pretend_users"][0]
        assert (await client.get(f"/topk/{other_user}", headers=other_key)).status_code == 200
        # a refused request reports the key's state too (here: a user it may not query)
        refused = await client.get("/topk/999999", headers=other_key)
        assert_problem(refused, 404, "not-found")
        assert refused.headers["RateLimit-Policy"] == "5;w=60"
        assert refused.headers["X-RateLimit-Remaining"] == "3"


def test_a_key_gets_through_once_its_window_moved_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock the test moves: refused requests are not counted, so a key that waits
    ``Retry-After`` gets through; the window moves per key."""
    now = [1_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = KeyRateLimiter("2/second")
    assert [limiter.check("a").allowed for _ in range(2)] == [True, True]
    refused = limiter.check("a")
    assert not refused.allowed and refused.headers["Retry-After"] == "1"
    now[0] += 0.5
    assert not any(limiter.check("a").allowed for _ in range(5))
    assert limiter.check("b").allowed
    now[0] += 0.51  # the first two left the window; the refusals were never in it
    again = limiter.check("a")
    assert again.allowed and again.remaining == 1


async def test_evaluation_is_paired_with_the_clean_model(
    artifact: Path, tmp_path: Path, transport: str
) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        world, key = await new_world(client)
        target = cold_item()
        url = f"/admin/worlds/{world['world_id']}/evaluate"
        clean = (await client.post(url, json={"target_items": [target]}, headers=ADMIN)).json()
        entry = clean["targets"][0]["cohorts"]["all"]
        assert entry["before"] == entry["after"]  # nothing injected yet
        holders = set(DATA.train[DATA.train[:, 1] == target, 0].tolist())
        assert entry["n_users"] == len(set(DATA.eval_users.tolist()) - holders)
        counts = np.bincount(DATA.train[:, 0], minlength=DATA.n_users)
        active = [u for u in set(DATA.eval_users.tolist()) - holders if counts[u] >= 3]
        assert clean["targets"][0]["cohorts"]["3+"]["n_users"] == len(active)
        assert set(entry["before"]) == {"sampled", "full"}
        assert set(entry["before"]["full"]) == {
            f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)
        }
        popular = np.argsort(-np.bincount(DATA.train[:, 1], minlength=DATA.n_items))[:4]
        for _ in range(15):
            items = [target, *map(int, popular)]
            assert (
                await client.post("/inject_user", json={"items": items}, headers=key)
            ).status_code == 201
        attacked = (await client.post(url, json={"target_items": [target]}, headers=ADMIN)).json()
        attacked_all = attacked["targets"][0]["cohorts"]["all"]
        assert attacked_all["before"] == entry["before"]
        assert attacked_all["after"] != entry["after"]
        assert attacked["mean"]["all"]["after"] == attacked_all["after"]
        # the sampled protocol alone: the same numbers, the full ranking left out
        for protocol in ("sampled", "full"):
            alone = await client.post(
                url, json={"target_items": [target], "protocols": [protocol]}, headers=ADMIN
            )
            for cohort, entry in alone.json()["targets"][0]["cohorts"].items():
                whole = attacked["targets"][0]["cohorts"][cohort]
                assert entry["before"] == {protocol: whole["before"][protocol]}
                assert entry["after"] == {protocol: whole["after"][protocol]}
        for protocols in ([], ["exact"], ["full", "full", "sampled"]):
            refused = await client.post(
                url, json={"target_items": [target], "protocols": protocols}, headers=ADMIN
            )
            assert_problem(refused, 422, "validation-error", "protocols")


async def test_delete_world_and_operations_routes(
    artifact: Path, scenario_dir: Path, tmp_path: Path, transport: str
) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db"), transport) as client:
        world, key = await new_world(client)
        user = world["pretend_users"][0]
        assert (await client.get(f"/topk/{user}", headers=key)).status_code == 200
        assert (await client.get("/livez")).json() == {"status": "ok"}
        info = (await client.get("/admin/model", headers=ADMIN)).json()
        assert info["n_items"] == DATA.n_items and info["worlds"] == 1
        assert info["scenario_fingerprint"] == read_manifest(scenario_dir)["fingerprint"]
        assert_problem(await client.get("/metrics", headers=key), 403, "forbidden")
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        assert 'recsys_http_requests_total{method="GET",route="/topk/{user_id}",status="200"}' in (
            metrics
        )
        assert f'recsys_world_queries_total{{world="{world["world_id"]}"}} 1.0' in metrics
        deleted = await client.delete(f"/admin/worlds/{world['world_id']}", headers=ADMIN)
        assert deleted.status_code == 204
        assert_problem(await client.get(f"/topk/{user}", headers=key), 401, "unauthorized")
        missing = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert_problem(missing, 404, "not-found", world["world_id"])
        unknown_route = await client.get("/nope")
        assert_problem(unknown_route, 404, "not-found")


ATTACKER_ROUTES = {"/inject_user", "/topk/{user_id}"}
OPEN_ROUTES = {"/livez", "/readyz"}


def test_the_openapi_schema_declares_what_the_routes_accept(artifact: Path, tmp_path: Path) -> None:
    """Admin routes and /metrics take the admin token alone (an attacker key gets 403
    there, so no key is advertised), attacker routes a key, and every route is in the
    schema and in the README's route table."""
    schema = create_app(settings_for(artifact, tmp_path / "l.db")).openapi()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## The black-box service", 1)[1].split("\n- ", 1)[0]
    assert "/metrics" in schema["paths"]
    metrics = schema["paths"]["/metrics"]["get"]["responses"]
    assert set(metrics["200"]["content"]) == {"text/plain"}
    operations = 0
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            operations += 1
            if path in OPEN_ROUTES:
                assert "security" not in operation, path
            elif path in ATTACKER_ROUTES:
                assert operation["security"] == [{"APIKeyHeader": []}], path
            else:
                assert path.startswith("/admin/") or path == "/metrics"
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                assert "403" in operation["responses"], path
            row = f"`{method.upper()} {path.replace('{world_id}', '{id}')}"
            assert re.search(re.escape(row) + "[`?]", table), f"{row} is not in the README"
    assert operations == 17  # the retrain job: GET and DELETE; detect


async def test_a_wrong_method_names_every_method_of_the_path(
    artifact: Path, tmp_path: Path
) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, _ = await new_world(client)
        cases = [
            ("OPTIONS", "/admin/worlds", {"GET", "POST"}),
            ("PUT", "/admin/worlds", {"GET", "POST"}),
            ("GET", "/inject_user", {"POST"}),
            ("POST", f"/admin/worlds/{world['world_id']}", {"DELETE"}),
            ("OPTIONS", f"/topk/{world['pretend_users'][0]}", {"GET"}),
        ]
        for method, path, allowed in cases:
            response = await client.request(method, path, headers=ADMIN)
            assert_problem(response, 405, "method-not-allowed", method)
            named = {m.strip() for m in response.headers["Allow"].split(",")}
            assert named - {"HEAD"} == allowed, (method, path, response.headers["Allow"])


async def test_unloadable_artifact_is_reported_not_served(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    app = create_app(settings_for(broken, tmp_path / "ledger.db"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            await loaded(app)
            response = await client.get("/readyz")
            assert_problem(response, 503, "not-ready", "broken.pt", "could not be loaded")
            assert (await client.get("/livez")).status_code == 200


def test_ledger_refuses_another_models_file(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db", "a" * 64).close()
    with pytest.raises(LedgerError, match="item ids would mean other movies"):
        Ledger(tmp_path / "l.db", "b" * 64)


def test_ledger_refuses_a_world_of_an_unknown_defence(tmp_path: Path) -> None:
    """A defence the server does not know (a hand-edited or foreign ledger) is named when
    the world is read, not taken for a detector later."""
    ledger = Ledger(tmp_path / "l.db", "a" * 64)
    ledger.create_world("w", "hash", [1, 2], Budgets(), defence="ecod")
    assert ledger.world("w").defence == "ecod"
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    other.execute("UPDATE worlds SET defence = 'lof' WHERE world_id = 'w'")
    other.close()
    for read in (lambda: ledger.world("w"), ledger.worlds):
        with pytest.raises(LedgerError, match="world w: the ledger names an unknown defence 'lof'"):
            read()
    ledger.close()


def test_artifact_without_serving_data_is_refused(artifact: Path, tmp_path: Path) -> None:
    from recsys_server.worlds import WorldRegistry

    loaded = ModelArtifact.load(artifact)
    ModelArtifact(loaded.victim, loaded.scenario_fingerprint).save(tmp_path / "bare.pt")
    bare = ModelArtifact.load(tmp_path / "bare.pt")
    with pytest.raises(ArtifactError, match="no serving data"):
        WorldRegistry(
            bare,
            Ledger(tmp_path / "l.db", bare.scenario_fingerprint),
            max_profile_length=10,
            max_retrain_jobs=1,
            query_lease=1,
        )
    assert json.dumps(loaded.metrics) == '{"note": "tiny test model"}'


async def test_writers_that_waited_for_a_deleted_world_get_a_clean_error(
    artifact: Path, tmp_path: Path
) -> None:
    async with running_app(settings_for(artifact, tmp_path / "ledger.db")) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL) as client:
            world, key = await new_world(client)
            url = f"/admin/worlds/{world['world_id']}"
            # queue an injection, a reset and two deletions behind one injection
            requests = [
                client.post("/inject_user", json={"items": [1, 2]}, headers=key),
                client.delete(url, headers=ADMIN),
                client.post("/inject_user", json={"items": [3]}, headers=key),
                client.post(f"{url}/reset", headers=ADMIN),
                client.delete(url, headers=ADMIN),
            ]
            answers = await asyncio.gather(*requests)
            statuses = [r.status_code for r in answers]
            assert statuses[:2] == [201, 204]
            assert statuses[2] == 401 and statuses[3] == statuses[4] == 404
            for response in answers[2:]:
                assert response.headers["content-type"] == "application/problem+json"
            assert_problem(
                await client.get(f"/topk/{DATA.n_users}", headers=key), 401, "unauthorized"
            )


async def test_a_failed_ledger_write_leaves_no_trace(artifact: Path, tmp_path: Path) -> None:
    """A ledger held by another process: 503, nothing acknowledged, nothing changed, no
    user id used up, and the server restarts on the ledger as it is."""
    settings = settings_for(artifact, tmp_path / "ledger.db")
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL) as client:
            world, key = await new_world(client)
            first = await client.post("/inject_user", json={"items": [1, 2]}, headers=key)
            user = world["pretend_users"][0]
            before = (await client.get(f"/topk/{user}", params={"k": 30}, headers=key)).json()
            blocker = sqlite3.connect(settings.ledger_path, timeout=0)
            blocker.execute("BEGIN IMMEDIATE")
            app.state.registry.ledger._db.execute("PRAGMA busy_timeout = 0")
            try:
                failed = await client.post("/inject_user", json={"items": [3, 4]}, headers=key)
            finally:
                blocker.rollback()
                blocker.close()
            assert_problem(failed, 503, "ledger-unavailable", "locked")
            assert failed.headers["Retry-After"] == "1"
            after = (await client.get(f"/topk/{user}", params={"k": 30}, headers=key)).json()
            assert after == before  # the refreshed state was never installed
            second = await client.post("/inject_user", json={"items": [3, 4]}, headers=key)
            assert second.json()["user_id"] == first.json()["user_id"] + 1
            answers = (await client.get(f"/topk/{user}", params={"k": 30}, headers=key)).json()
    async with serving(settings) as client:  # replays the ledger: the same world
        assert (await client.get(f"/topk/{user}", params={"k": 30}, headers=key)).json() == answers


async def test_a_lease_not_given_back_at_shutdown_stays_spent(
    artifact: Path, tmp_path: Path
) -> None:
    """A graceful stop while another process holds the ledger: the stop still completes,
    and the unanswered rest of the lease stays counted as spent, as after a crash."""
    settings = settings_for(
        artifact, tmp_path / "ledger.db", rate_limit="100000/second", query_lease=8
    )
    blocker = sqlite3.connect(settings.ledger_path, timeout=0)
    try:
        async with running_app(settings) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=IN_PROCESS_URL) as client:
                world, key = await new_world(client, budgets={"queries": 100})
                user = world["pretend_users"][0]
                for _ in range(3):
                    assert (await client.get(f"/topk/{user}", headers=key)).status_code == 200
            blocker.execute("BEGIN IMMEDIATE")
            app.state.registry.ledger._db.execute("PRAGMA busy_timeout = 0")
    finally:
        blocker.rollback()
        blocker.close()
    async with serving(settings) as client:
        assert (await usage(client, world["world_id"]))["used"]["queries"] == 8
