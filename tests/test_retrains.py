"""Scheduled retrains as jobs: accepted at once (202), run off the evaluations' thread,
bounded in number, cancellable (also by deleting or resetting their world), and durable:
recorded in the ledger and replayed, the same fine-tune, after a SIGKILL.

A held fine-tune (:class:`HeldRetrain`) waits for the test's word, checking for
cancellation as the real training loops do: nothing here depends on how long anything
takes; the bounds only catch a hang."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import recsys_server.pinsage.train as pinsage_train
from recsys_server.app import create_app
from recsys_server.artifact import ModelArtifact
from recsys_server.cancellation import Cancelled, check_cancelled, run_cancellable
from recsys_server.data import TargetData
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.settings import Settings
from recsys_server.victims.base import ServingState
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import (
    ADMIN,
    NO_RATE_LIMIT,
    finished_job,
    loaded,
    retrain,
    serving,
    settings_for,
    tiny_server,
)

DATA = tiny_data()
BOUND = 300  # seconds: only a hang (or a retrain that blocks the caller) reaches it
COLD = int(np.argmin(np.bincount(DATA.train[:, 1], minlength=DATA.n_items)))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HeldRetrain:
    """Every PinSage fine-tune waits until ``release`` is set, checking for cancellation
    meanwhile, then runs for real."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()

    def retrained(self, real: object) -> object:
        def held(state: ServingState, data: TargetData, epochs: int) -> ServingState:
            self.entered.set()
            try:
                while not self.release.wait(0.01):
                    check_cancelled()
            except Cancelled:
                self.cancelled.set()
                raise
            return real(state, data, epochs)  # type: ignore[operator]

        return held

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, BOUND), "the fine-tune never began"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldRetrain]:
    gate = HeldRetrain()
    monkeypatch.setattr(EmbeddingState, "retrained", gate.retrained(EmbeddingState.retrained))
    try:
        yield gate
    finally:
        gate.release.set()  # whatever failed, no thread stays held


@asynccontextmanager
async def serving_held(settings: Settings, held: HeldRetrain) -> AsyncIterator[httpx.AsyncClient]:
    """The service in-process; a held fine-tune is released before the service stops (a
    service that waits for its fine-tunes as it stops must not hang a failing test)."""
    async with serving(settings) as client:
        try:
            yield client
        finally:
            held.release.set()


async def new_world(client: httpx.AsyncClient, inject: bool = True) -> tuple[str, dict]:
    created = (await client.post("/admin/worlds", json={}, headers=ADMIN)).json()
    key = {"X-API-Key": created["api_key"]}
    if inject:
        injected = await client.post("/inject_user", json={"items": [COLD, 3, 5]}, headers=key)
        assert injected.status_code == 201, injected.text
    return created["world_id"], key


async def start(client: httpx.AsyncClient, world_id: str) -> httpx.Response:
    """POST .../retrain, which must answer without waiting for the fine-tune."""
    return await asyncio.wait_for(
        client.post(f"/admin/worlds/{world_id}/retrain", json={"epochs": 1}, headers=ADMIN),
        BOUND,
    )


async def epoch(client: httpx.AsyncClient, world_id: str) -> int:
    usage = await client.get(f"/admin/worlds/{world_id}/usage", headers=ADMIN)
    return usage.json()["embedding_epoch"]


def assert_problem(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == kind


@pytest.mark.anyio
async def test_a_running_retrain_holds_up_no_evaluation_and_jobs_are_bounded(
    artifact: Path, tmp_path: Path, held: HeldRetrain
) -> None:
    settings = settings_for(artifact, tmp_path / "ledger.db", max_retrain_jobs=1)
    async with serving_held(settings, held) as client:
        tuned, key = await new_world(client)
        other, _ = await new_world(client)
        started = await start(client, tuned)
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] in ("queued", "running") and job["world_id"] == tuned
        location = started.headers["location"]
        assert location == f"/admin/worlds/{tuned}/retrain/{job['job_id']}"
        await held.wait_entered()
        assert (await client.get(location, headers=ADMIN)).json()["status"] == "running"

        # the fine-tune holds no one up: evaluations of both worlds, the attacker's queries
        for world_id in (tuned, other):
            evaluated = await asyncio.wait_for(
                client.post(
                    f"/admin/worlds/{world_id}/evaluate",
                    json={"target_items": [COLD], "protocols": ["sampled"]},
                    headers=ADMIN,
                ),
                BOUND,
            )
            assert evaluated.status_code == 200, evaluated.text
        pretend = (await client.get(f"/admin/worlds/{tuned}/usage", headers=ADMIN)).json()
        topk = await client.get(f"/topk/{pretend['pretend_users'][0]}", headers=key)
        assert topk.status_code == 200

        # one job at a time per world, and at most max_retrain_jobs in all: refused, and
        # nothing changes
        assert_problem(await start(client, tuned), 409, "conflict")
        refused = await start(client, other)
        assert_problem(refused, 429, "too-many-jobs")
        assert int(refused.headers["retry-after"]) > 0
        assert "RECSYS_MAX_RETRAIN_JOBS" in refused.json()["detail"]
        assert await epoch(client, other) == 1

        held.release.set()
        done = await finished_job(client, location)
        assert done["status"] == "succeeded" and done["embedding_epoch"] == 2
        assert await epoch(client, tuned) == 2
        # the slot is free again
        assert (await retrain(client, other, 1))["embedding_epoch"] == 2


@pytest.mark.anyio
async def test_cancelling_a_job_or_deleting_its_world_stops_the_fine_tune(
    artifact: Path, tmp_path: Path, held: HeldRetrain
) -> None:
    settings = settings_for(artifact, tmp_path / "ledger.db", max_retrain_jobs=2)
    async with serving_held(settings, held) as client:
        running_world, _ = await new_world(client)
        queued_world, _ = await new_world(client)
        running = await start(client, running_world)
        await held.wait_entered()
        queued = await start(client, queued_world)
        assert queued.json()["status"] == "queued"  # the one fine-tune thread is busy

        # a queued job is cancelled before it starts
        answer = await asyncio.wait_for(
            client.delete(queued.headers["location"], headers=ADMIN), BOUND
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "cancelled" and not held.cancelled.is_set()
        # a running one stops at its next check; the world keeps its model
        answer = await asyncio.wait_for(
            client.delete(running.headers["location"], headers=ADMIN), BOUND
        )
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
        assert held.cancelled.is_set()
        assert await epoch(client, running_world) == 1
        # a finished job has nothing to cancel; an unknown one is not found
        again = await client.delete(running.headers["location"], headers=ADMIN)
        assert_problem(again, 409, "conflict")
        unknown = await client.get(f"/admin/worlds/{running_world}/retrain/j_0", headers=ADMIN)
        assert_problem(unknown, 404, "not-found")

        # deleting a world stops its running fine-tune (the DELETE does not wait it out)
        held.entered.clear()
        held.cancelled.clear()
        doomed = await start(client, running_world)
        await held.wait_entered()
        deleted = await asyncio.wait_for(
            client.delete(f"/admin/worlds/{running_world}", headers=ADMIN), BOUND
        )
        assert deleted.status_code == 204
        assert held.cancelled.is_set()
        gone = await client.get(doomed.headers["location"], headers=ADMIN)
        assert_problem(gone, 404, "not-found")

        # so does a reset; both cancelled jobs freed their places
        held.cancelled.clear()
        reset_job = await start(client, queued_world)
        assert reset_job.status_code == 202, reset_job.text
        reset = await asyncio.wait_for(
            client.post(f"/admin/worlds/{queued_world}/reset", headers=ADMIN), BOUND
        )
        assert reset.status_code == 200 and reset.json()["embedding_epoch"] == 0
        assert (await client.get(reset_job.headers["location"], headers=ADMIN)).json()[
            "status"
        ] == "cancelled"
        held.release.set()
        assert (await retrain(client, queued_world, 1))["embedding_epoch"] == 1


def test_a_cancelled_fine_tune_stops_at_its_next_batch(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded_artifact = ModelArtifact.load(artifact)
    assert loaded_artifact.data is not None  # the tiny artifact carries its training data
    state = loaded_artifact.victim.serving_state(loaded_artifact.data)
    cancel = threading.Event()
    batches = 0
    real_loss = pinsage_train.bpr_loss

    def loss_then_cancel(*args: Any) -> Any:
        nonlocal batches
        batches += 1
        cancel.set()  # cancelled during the first batch
        return real_loss(*args)

    monkeypatch.setattr(pinsage_train, "bpr_loss", loss_then_cancel)
    with pytest.raises(Cancelled):
        run_cancellable(cancel, state.retrained, loaded_artifact.data, 5)
    assert batches == 1


def topk_lists(client: httpx.Client, key: dict[str, str], users: list[int]) -> list[list[int]]:
    return [client.get(f"/topk/{u}", params={"k": 20}, headers=key).json()["items"] for u in users]


def poll_until_finished(client: httpx.Client, location: str) -> dict:
    for _ in range(60_000):  # 0.01 s apart: 10 minutes at the least
        job = client.get(location, headers=ADMIN).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        threading.Event().wait(0.01)
    raise AssertionError(f"retrain job {location} never finished")


def test_a_retrain_survives_sigkill(artifact: Path, tmp_path: Path) -> None:
    """Injections, a retrain, more injections; SIGKILL; the restarted server replays them
    in that order and answers exactly as before: the same lists, the same metrics."""
    ledger = tmp_path / "ledger.db"
    rng = np.random.default_rng(2)
    profiles = [rng.choice(DATA.n_items, size=8, replace=False).tolist() for _ in range(4)]
    first = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    try:
        with httpx.Client(base_url=first.url, timeout=BOUND) as client:
            created = client.post("/admin/worlds", json={}, headers=ADMIN).json()
            world, key = created["world_id"], {"X-API-Key": created["api_key"]}
            users = []
            for i, profile in enumerate(profiles):
                if i == 3:  # after three injections, one retrain
                    started = client.post(
                        f"/admin/worlds/{world}/retrain", json={"epochs": 2}, headers=ADMIN
                    )
                    assert started.status_code == 202, started.text
                    job = poll_until_finished(client, started.headers["location"])
                    assert job["status"] == "succeeded" and job["embedding_epoch"] == 4
                injected = client.post("/inject_user", json={"items": profile}, headers=key)
                users.append(injected.json()["user_id"])
            asked = created["pretend_users"][:10] + users
            before = topk_lists(client, key, asked)
            body = {"target_items": [COLD, *profiles[0][:2]]}
            evaluation = client.post(f"/admin/worlds/{world}/evaluate", json=body, headers=ADMIN)
            assert (
                client.get(f"/admin/worlds/{world}/usage", headers=ADMIN).json()["embedding_epoch"]
                == 5
            )
    finally:
        first.kill()
    second = tiny_server(artifact, ledger, **NO_RATE_LIMIT).start()
    try:
        with httpx.Client(base_url=second.url, timeout=BOUND) as client:
            usage = client.get(f"/admin/worlds/{world}/usage", headers=ADMIN).json()
            assert usage["embedding_epoch"] == 5 and usage["injected_users"] == 4
            assert topk_lists(client, key, asked) == before
            again = client.post(f"/admin/worlds/{world}/evaluate", json=body, headers=ADMIN)
            assert again.json() == evaluation.json()
    finally:
        second.stop()


@pytest.mark.anyio
async def test_a_replayed_retrain_must_give_the_recorded_scores_and_a_reset_drops_it(
    artifact: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    settings = settings_for(artifact, ledger)
    async with serving(settings) as client:
        kept, _ = await new_world(client)
        dropped, _ = await new_world(client)
        for world_id in (kept, dropped):
            await retrain(client, world_id, 1)
        reset = await client.post(f"/admin/worlds/{dropped}/reset", headers=ADMIN)
        assert reset.json()["embedding_epoch"] == 0
    async with serving(settings) as client:
        assert await epoch(client, kept) == 2 and await epoch(client, dropped) == 0
    with sqlite3.connect(ledger) as db:
        db.execute("UPDATE retrains SET scores_sha256 = ?", ("0" * 64,))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await loaded(app)
        assert app.state.registry is None
        assert f"replaying world {kept}: a retrain" in app.state.load_error
