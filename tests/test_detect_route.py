"""``POST /admin/worlds/{id}/detect``: a detector's verdict on a world's users against
the ledger's ground truth; its auth and bad input; the attacker learns nothing of it."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.fake_profiles import PlatformStats, fake_profile
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import ADMIN, serving, settings_for
from tests.test_service import assert_problem, new_world, usage

pytestmark = pytest.mark.anyio
DATA = tiny_data()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def generated(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    stats = PlatformStats(np.full(DATA.n_users, 12), np.bincount(DATA.train[:, 1]))
    return [fake_profile("random", 5, stats, rng).tolist() for _ in range(n)]


async def snapshot(client: httpx.AsyncClient, world: dict, key: dict) -> tuple:
    """What the attacker and the ledger show of the world (queries spent by the read)."""
    answers = [
        (await client.get(f"/topk/{u}", params={"k": 10}, headers=key)).json()
        for u in world["pretend_users"][:3]
    ]
    injections = await client.get(f"/admin/worlds/{world['world_id']}/injections", headers=ADMIN)
    return answers, injections.json(), await usage(client, world["world_id"])


async def test_detect_scores_every_user_against_the_ledger(artifact: Path, tmp_path: Path) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await new_world(client)
        injected = []
        for profile in generated(8, seed=0):
            answer = await client.post("/inject_user", json={"items": profile}, headers=key)
            assert answer.status_code == 201, answer.text
            injected.append(answer.json()["user_id"])
        before = await snapshot(client, world, key)
        url = f"/admin/worlds/{world['world_id']}/detect"
        for detector in ("pca", "degree", "ecod", "iforest"):
            response = await client.post(url, json={"detector": detector}, headers=ADMIN)
            assert response.status_code == 200, response.text
            report = response.json()
            assert report["detector"] == detector and report["n_injected"] == 8
            users = {u["user_id"]: u for u in report["users"]}
            assert {u for u, entry in users.items() if entry["injected"]} == set(injected)
            flagged = [u for u, entry in users.items() if entry["flagged"]]
            assert report["n_flagged"] == len(flagged)
            hits = len(set(flagged) & set(injected))
            assert report["recall"] == pytest.approx(hits / 8)
            assert report["precision"] == pytest.approx(hits / len(flagged) if flagged else 0.0)
            assert 0.0 <= report["roc_auc"] <= 1.0 and 0.0 < report["js_distance"] <= 1.0
        # a threshold of the caller's; no user list when not asked for
        low = await client.post(
            url, json={"detector": "degree", "threshold": -1, "include_users": False}, headers=ADMIN
        )
        assert low.json()["n_flagged"] == low.json()["n_users"] and low.json()["users"] is None
        # the attacker's view and the ledger are as they were (the reads cost the same)
        after = await snapshot(client, world, key)
        assert after[:2] == before[:2]
        assert after[2]["used"]["queries"] == before[2]["used"]["queries"] + 3
        assert after[2]["used"]["injections"] == before[2]["used"]["injections"]


async def test_detect_refuses_bad_credentials_and_input_and_changes_nothing(
    artifact: Path, tmp_path: Path
) -> None:
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        world, key = await new_world(client)
        await client.post("/inject_user", json={"items": generated(1, 1)[0]}, headers=key)
        url = f"/admin/worlds/{world['world_id']}/detect"
        body = {"detector": "pca"}
        before = await usage(client, world["world_id"])
        assert_problem(await client.post(url, json=body), 401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert_problem(await client.post(url, json=body, headers=wrong), 401, "unauthorized")
        assert_problem(await client.post(url, json=body, headers=key), 403, "forbidden")
        as_bearer = {"Authorization": f"Bearer {world['api_key']}"}
        assert_problem(await client.post(url, json=body, headers=as_bearer), 403, "forbidden")
        missing = "/admin/worlds/w_0000/detect"
        assert_problem(await client.post(missing, json=body, headers=ADMIN), 404, "not-found")
        for bad, word in (
            ({"detector": "nope"}, "detector"),
            ({}, "detector"),
            ({"detector": "pca", "threshold": True}, "threshold"),
            ({"detector": "pca", "threshold": "0.5"}, "threshold"),
            ({"detector": "pca", "include_users": 1}, "include_users"),
            ({"detector": "pca", "extra": 1}, "extra"),
            ({"detector": True}, "detector"),
        ):
            response = await client.post(url, json=bad, headers=ADMIN)
            assert_problem(response, 422, "validation-error", word)
        # not JSON, and thresholds that are no finite number
        for text in (
            b"{no",
            b'{"detector": "pca", "threshold": 1e999}',
            b'{"detector": "pca", "threshold": NaN}',
        ):
            response = await client.post(
                url, content=text, headers={**ADMIN, "Content-Type": "application/json"}
            )
            assert_problem(response, 422, "validation-error")
        after = await usage(client, world["world_id"])
        assert after == before
