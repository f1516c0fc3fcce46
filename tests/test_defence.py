"""A defended world (``"defence"`` at creation): a profile its detector flags is
quarantined at injection, recorded in the ledger, answered exactly like an accepted one,
kept out of the recommender; a restarted server quarantines the same."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pytest

import recsys_server.detection.detectors as detectors_module
import recsys_server.detection.service as detection_service
import recsys_server.worlds.attacks as attacks_module
from recsys_server.detection.detectors import Detector
from recsys_server.detection.features import Profiles
from recsys_server.detection.service import Detection
from recsys_server.graph import InteractionGraph
from recsys_server.victims.base import ServingState
from shared.fake_profiles import PlatformStats, fake_profile
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import ADMIN, retrain, serving, settings_for
from tests.test_service import assert_problem

pytestmark = pytest.mark.anyio
DATA = tiny_data()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def profiles() -> list[list[int]]:
    """Random fakes (the detector flags most) between copies of real training profiles
    (it flags few): both verdicts occur."""
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    stats = PlatformStats(np.full(10, 15), graph.train_degree)
    rng = np.random.default_rng(3)
    real = [graph.profile(u).tolist() for u in range(DATA.n_users) if len(graph.profile(u)) >= 8]
    out = []
    for index in range(6):
        out.append(fake_profile("random", 7, stats, rng).tolist())
        out.append(real[index])
    return out


async def world_of(client: httpx.AsyncClient, **body: object) -> tuple[dict, dict]:
    response = await client.post("/admin/worlds", json={"seed": 1, **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json(), {"X-API-Key": response.json()["api_key"]}


async def inject_all(client: httpx.AsyncClient, key: dict, batch: list[list[int]]) -> list:
    answers = []
    for items in batch:
        response = await client.post("/inject_user", json={"items": items}, headers=key)
        assert response.status_code == 201, response.text
        answers.append(response.json())
    return answers


async def tops(client: httpx.AsyncClient, key: dict, users: list[int]) -> list[list[int]]:
    out = []
    for user in users:
        response = await client.get(f"/topk/{user}", params={"k": 15}, headers=key)
        assert response.status_code == 200, response.text
        out.append(response.json()["items"])
    return out


async def test_a_flagged_injection_is_quarantined_unseen_and_survives_a_restart(
    artifact: Path, tmp_path: Path
) -> None:
    batch = profiles()
    settings = settings_for(artifact, tmp_path / "ledger.db")
    async with serving(settings) as client:
        defended, key = await world_of(client, defence="degree")
        assert defended["defence"] == "degree" and defended["defence_threshold"] is not None
        _, plain_key = await world_of(client)
        answers = await inject_all(client, key, batch)
        # the attacker's answers are those of an undefended world, injection by injection
        assert answers == await inject_all(client, plain_key, batch)
        injected = [a["user_id"] for a in answers]
        export = await client.get(f"/admin/worlds/{defended['world_id']}/injections", headers=ADMIN)
        verdicts = [p["quarantined"] for p in export.json()]
        # the verdict is the detector's, at the stated threshold
        detection = Detection(InteractionGraph(DATA.train, DATA.n_users, DATA.n_items))
        scores = detection.detector("degree")[0].score(Profiles.of(batch))
        assert verdicts == (scores > defended["defence_threshold"]).tolist()
        assert any(verdicts) and not all(verdicts)
        # a quarantined user is answered like any injected user: as in the undefended world
        pretend = defended["pretend_users"]
        assert await tops(client, key, injected) == await tops(client, plain_key, injected)
        # ... and left out of the graph: the pretend users see only the accepted profiles
        _, accepted_key = await world_of(client)
        accepted = [p for p, q in zip(batch, verdicts, strict=True) if not q]
        await inject_all(client, accepted_key, accepted)
        defended_tops = await tops(client, key, pretend)
        assert defended_tops == await tops(client, accepted_key, pretend)
        usage = await client.get(f"/admin/worlds/{defended['world_id']}/usage", headers=ADMIN)
        assert usage.json()["quarantined"] == sum(verdicts)
        assert usage.json()["injected_users"] == len(batch) - sum(verdicts)
        assert usage.json()["used"]["injections"] == len(batch)  # counted like any other
        detect = await client.post(
            f"/admin/worlds/{defended['world_id']}/detect",
            json={"detector": "degree", "include_users": False},
            headers=ADMIN,
        )
        assert detect.json()["n_injected"] == len(batch)  # the quarantined are judged too
    async with serving(settings) as client:  # restarted on the same ledger
        export = await client.get(f"/admin/worlds/{defended['world_id']}/injections", headers=ADMIN)
        assert [p["quarantined"] for p in export.json()] == verdicts
        assert await tops(client, key, pretend) == defended_tops
        assert await tops(client, key, injected) == await tops(client, plain_key, injected)
        again = await client.get(f"/admin/worlds/{defended['world_id']}/usage", headers=ADMIN)
        assert again.json()["quarantined"] == sum(verdicts)
        assert again.json()["defence_threshold"] == defended["defence_threshold"]


async def test_a_bad_defence_is_refused_and_creates_nothing(artifact: Path, tmp_path: Path) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        for body, word in (
            ({"defence": "magic"}, "defence"),
            ({"defence": True}, "defence"),
            ({"defence": "pca", "defence_threshold": True}, "defence_threshold"),
            ({"defence": "pca", "defence_threshold": "1"}, "defence_threshold"),
            ({"defence": "none", "defence_threshold": 5.0}, "needs a defence"),
            ({"defence_threshold": 5.0}, "needs a defence"),
        ):
            response = await client.post("/admin/worlds", json=body, headers=ADMIN)
            assert_problem(response, 422, "validation-error", word)
        assert (await client.get("/admin/worlds", headers=ADMIN)).json() == []


async def test_a_retrain_of_a_defended_world_replays_after_a_restart(
    artifact: Path, tmp_path: Path
) -> None:
    """The retrain is recorded after every injection so far, quarantined ones included
    (the ledger's count), so the replay runs it at the same point; and the injected users'
    lists come from a retrained model too, those an undefended twin world gives after the
    same retrain (an untuned shadow would tell the attacker that a retrain happened to the
    pretend users' model and not to its own users')."""
    batch = profiles()
    settings = settings_for(artifact, tmp_path / "ledger.db")
    async with serving(settings) as client:
        world, key = await world_of(client, defence="degree")
        twin, twin_key = await world_of(client)
        injected = []
        for id_, key_ in ((world["world_id"], key), (twin["world_id"], twin_key)):
            answers = await inject_all(client, key_, batch[:6])
            await retrain(client, id_, epochs=1)
            answers += await inject_all(client, key_, batch[6:])
            injected.append([a["user_id"] for a in answers])
        assert injected[0] == injected[1]
        before = await tops(client, key, world["pretend_users"])
        injected_tops = await tops(client, key, injected[0])
        assert injected_tops == await tops(client, twin_key, injected[0])
        usage = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert 0 < usage.json()["quarantined"] < len(batch)
        # the pretend users' model was retrained without the quarantined profiles
        assert before != await tops(client, twin_key, world["pretend_users"])
    async with serving(settings) as client:
        assert await tops(client, key, world["pretend_users"]) == before
        assert await tops(client, key, injected[0]) == injected_tops


async def test_a_quarantined_injection_costs_the_refresh_an_accepted_one_does(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both verdicts run the same refreshes (the shadow's and the defended state's), so
    an injection's answer time does not tell the attacker it was quarantined."""
    refreshes: list[int] = []
    real_with_user = attacks_module.with_user

    def counted(state: ServingState, items: list[int]) -> tuple[ServingState, int]:
        refreshes.append(len(items))
        return real_with_user(state, items)

    monkeypatch.setattr(attacks_module, "with_user", counted)
    verdicts = []
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await world_of(client, defence="degree")
        for items in profiles():
            before = len(refreshes)
            await inject_all(client, key, [items])
            assert len(refreshes) - before == 2
            url = f"/admin/worlds/{world['world_id']}/injections"
            verdicts.append((await client.get(url, headers=ADMIN)).json()[-1]["quarantined"])
    assert any(verdicts) and not all(verdicts)  # both verdicts were exercised


async def test_a_default_threshold_is_recorded_and_outlives_a_change_of_the_default(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A world created without a threshold keeps the one in force at its creation: after a
    restart under code whose default moved, it states and screens with the same."""
    settings = settings_for(artifact, tmp_path / "ledger.db")
    async with serving(settings) as client:
        world, key = await world_of(client, defence="degree")
        created = world["defence_threshold"]
    monkeypatch.setattr(detectors_module, "FALSE_ALARM", 0.5)  # the code's default moves
    batch = profiles()
    async with serving(settings) as client:
        moved, _ = await world_of(client, defence="degree")
        assert moved["defence_threshold"] < created  # the default did move
        usage = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert usage.json()["defence_threshold"] == created
        await inject_all(client, key, batch)
        export = await client.get(f"/admin/worlds/{world['world_id']}/injections", headers=ADMIN)
        verdicts = [p["quarantined"] for p in export.json()]
    detection = Detection(InteractionGraph(DATA.train, DATA.n_users, DATA.n_items))
    scores = detection.detector("degree")[0].score(Profiles.of(batch))
    assert verdicts == (scores > created).tolist()
    assert verdicts != (scores > moved["defence_threshold"]).tolist()  # the two tell apart


async def test_fitting_a_detector_holds_up_no_other_world(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit takes seconds on the real pairs: while a new world's detector is fitted, a
    defended world's injections, top-k and usage are answered (nothing waits for the fit
    on a shared lock, a shared thread or the event loop)."""
    fit_started, release = threading.Event(), threading.Event()
    real_fitted = detection_service.fitted

    def held_fit(name: str, *args: object) -> Detector:
        if name == "pca":
            fit_started.set()
            release.wait()
        return real_fitted(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(detection_service, "fitted", held_fit)
    # only ends a fit that something waits for (a pass never needs it): the requests
    # below then answer after the release, and the test fails instead of hanging
    deadline = threading.Timer(60, release.set)
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await world_of(client, defence="degree")
        creating = asyncio.create_task(
            client.post("/admin/worlds", json={"seed": 2, "defence": "pca"}, headers=ADMIN)
        )
        deadline.start()
        try:
            assert await asyncio.to_thread(fit_started.wait, 60)
            answers = await inject_all(client, key, profiles()[:2])
            await tops(client, key, [answers[0]["user_id"], world["pretend_users"][0]])
            usage = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
            assert usage.status_code == 200
            assert not release.is_set()  # all answered while the fit was under way
        finally:
            release.set()
            deadline.cancel()
        assert (await creating).status_code == 201


async def test_a_world_recorded_without_its_threshold_keeps_the_default_of_its_first_restore(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written before thresholds were recorded: the first restore records the
    default then in force, and a later default does not change it."""
    settings = settings_for(artifact, tmp_path / "ledger.db")
    async with serving(settings) as client:
        world, _ = await world_of(client, defence="degree")
    with closing(sqlite3.connect(settings.ledger_path)) as db, db:
        db.execute("UPDATE worlds SET defence_threshold = NULL")  # as older versions wrote
    async with serving(settings):
        pass  # the restore records the default
    monkeypatch.setattr(detectors_module, "FALSE_ALARM", 0.5)  # the code's default moves
    async with serving(settings) as client:
        usage = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert usage.json()["defence_threshold"] == world["defence_threshold"]
