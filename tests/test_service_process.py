"""The service as a real ``recsys-server serve`` process on 127.0.0.1: durability across
SIGKILL, graceful shutdown, and a schemathesis run over the OpenAPI schema with both kinds
of key. (Every test of ``test_service`` also runs against a real process.)"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from shared.process import ServerProcess
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import ADMIN, ADMIN_TOKEN, NO_RATE_LIMIT, tiny_server

DATA = tiny_data()


def create_world(url: str, **body: object) -> tuple[dict, dict[str, str]]:
    response = httpx.post(f"{url}/admin/worlds", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json(), {"X-API-Key": response.json()["api_key"]}


@pytest.mark.parametrize("credentials", ["attacker", "admin"])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: ServerProcess, credentials: str, tmp_path: Path
) -> None:
    _, key = create_world(server.url)
    header = (
        f"X-API-Key: {key['X-API-Key']}"
        if credentials == "attacker"
        else f"Authorization: Bearer {ADMIN_TOKEN}"
    )
    checks = ",".join(
        [
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_schema_conformance",
            "response_headers_conformance",
        ]
    )
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "-H", header, "--max-examples", "25", "--seed", "1", "--checks", checks,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout


def first_answer(url: str, head: str) -> str:
    """Send a request's head alone (its body never follows) and read the first answer."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        return answer.decode("latin-1")


def test_a_body_announced_but_never_sent_is_not_waited_for(server: ServerProcess) -> None:
    """Over a socket: 100 MB announced, no byte of it sent. The server answers at once:
    401 without credentials, 413 with them; it never waits for (or reads) the body."""
    _, key = create_world(server.url)
    head = (
        "POST /inject_user HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000000\r\n{key}\r\n"
    )
    for credentials, status in (("", "401"), (f"X-API-Key: {key['X-API-Key']}\r\n", "413")):
        answer = first_answer(server.url, head.format(key=credentials))
        assert answer.startswith(f"HTTP/1.1 {status} "), answer
        assert "content-type: application/problem+json" in answer.lower()


def topk_lists(url: str, key: dict[str, str], users: list[int]) -> list[list[int]]:
    return [
        httpx.get(f"{url}/topk/{u}", params={"k": 20}, headers=key).json()["items"] for u in users
    ]


def test_answers_survive_sigkill(artifact: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    first = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    try:
        world, key = create_world(first.url)
        rng = np.random.default_rng(0)
        profiles = [rng.choice(DATA.n_items, size=8, replace=False).tolist() for _ in range(12)]
        users = []
        for profile in profiles:
            response = httpx.post(f"{first.url}/inject_user", json={"items": profile}, headers=key)
            assert response.status_code == 201
            users.append(response.json()["user_id"])
        asked = world["pretend_users"][:10] + users[:3]
        before = topk_lists(first.url, key, asked)
    finally:
        first.kill()
    second = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    try:
        assert topk_lists(second.url, key, asked) == before
        usage = httpx.get(f"{second.url}/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert usage.json()["used"]["injections"] == 12
        # the first server's one lease (64 by default; 13 of it answered) and the 13
        # queries of the second
        assert usage.json()["used"]["queries"] == 64 + len(asked)
        exported = httpx.get(
            f"{second.url}/admin/worlds/{world['world_id']}/injections", headers=ADMIN
        ).json()
        assert [p["items"] for p in exported] == profiles
        assert [p["user_id"] for p in exported] == users
    finally:
        # SIGTERM: a graceful exit (uvicorn re-raises the signal once it has shut down)
        assert second.stop() in (0, -signal.SIGTERM)
    # the shutdown closed the ledger: SQLite checkpointed the write-ahead log and removed it
    assert ledger.exists() and not Path(f"{ledger}-wal").exists()


def answer_codes(url: str, key: dict[str, str], user: int, n: int) -> list[int]:
    with httpx.Client(base_url=url, headers=key) as client:
        return [client.get(f"/topk/{user}").status_code for _ in range(n)]


def test_a_kill_counts_the_unanswered_lease_as_spent(artifact: Path, tmp_path: Path) -> None:
    """Leases of 8 queries, SIGKILL after 11 answers: the restarted server counts the 11
    and the 5 unanswered of the second lease as spent (never fewer than were answered),
    and the budget answers no more than its size in all. A graceful stop (SIGTERM) gives
    the unanswered rest back: then the count is exact."""
    ledger = tmp_path / "ledger.db"
    env = {**NO_RATE_LIMIT, "RECSYS_QUERY_LEASE": "8"}
    first = tiny_server(artifact, ledger, **env).start()
    try:
        world, key = create_world(first.url, budgets={"queries": 40})
        user = world["pretend_users"][0]
        assert answer_codes(first.url, key, user, 11) == [200] * 11
    finally:
        first.kill()
    second = tiny_server(artifact, ledger, **env).start()
    try:
        used = httpx.get(f"{second.url}/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert used.json()["used"]["queries"] == used.json()["total"]["queries"] == 16
        assert used.json()["remaining"]["queries"] == 24
        assert answer_codes(second.url, key, user, 30) == [200] * 24 + [429] * 6
        other, other_key = create_world(second.url, budgets={"queries": 40}, seed=1)
        assert answer_codes(second.url, other_key, other["pretend_users"][0], 3) == [200] * 3
    finally:
        assert second.stop() in (0, -signal.SIGTERM)
    third = tiny_server(artifact, ledger, **env).start()
    try:
        for spent, n in ((world, 40), (other, 3)):
            url = f"{third.url}/admin/worlds/{spent['world_id']}/usage"
            assert httpx.get(url, headers=ADMIN).json()["used"]["queries"] == n
    finally:
        third.stop()


def test_a_kill_mid_stream_loses_nothing_acknowledged(artifact: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    first = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    world, key = create_world(first.url)
    acknowledged: list[tuple[int, list[int]]] = []
    some_acknowledged = threading.Event()
    rng = np.random.default_rng(1)

    def inject_until_killed() -> None:
        with httpx.Client(base_url=first.url, headers=key, timeout=30) as client:
            while True:
                profile = rng.choice(DATA.n_items, size=30, replace=False).tolist()
                try:
                    response = client.post("/inject_user", json={"items": profile})
                except httpx.TransportError:
                    return
                acknowledged.append((response.json()["user_id"], profile))
                if len(acknowledged) == 5:
                    some_acknowledged.set()  # and on: the kill comes mid-stream

    sender = threading.Thread(target=inject_until_killed)
    sender.start()
    assert some_acknowledged.wait(timeout=300), "no injection was acknowledged"
    first.kill()
    sender.join(timeout=60)
    assert not sender.is_alive() and len(acknowledged) >= 5
    second = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    try:
        base = f"{second.url}/admin/worlds/{world['world_id']}"
        exported = httpx.get(f"{base}/injections", headers=ADMIN).json()
        recorded = [(p["user_id"], p["items"]) for p in exported]
        # everything acknowledged is there; at most the one in flight was also committed
        assert recorded[: len(acknowledged)] == acknowledged
        assert len(recorded) - len(acknowledged) in (0, 1)
        used = httpx.get(f"{base}/usage", headers=ADMIN).json()
        # counters and rows were written in one transaction: they agree
        assert used["used"]["injections"] == len(recorded) == used["injected_users"]
        assert used["used"]["items"] == sum(len(items) for _, items in recorded)
    finally:
        second.stop()
