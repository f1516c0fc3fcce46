"""The service serving a LightGCN artifact over HTTP: a world answers /inject_user and
/topk as the model's own serving state does, /admin/model names the victim, and the
scheduled retrain route fine-tunes the world's model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_server.artifact import ModelArtifact
from recsys_server.lightgcn.model import LightGCNConfig
from recsys_server.lightgcn.train import train_lightgcn
from recsys_server.training import TrainConfig
from recsys_server.victims.lightgcn import LightGCNVictim
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import ADMIN, retrain, serving, settings_for

pytestmark = pytest.mark.anyio
DATA = tiny_data()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def lightgcn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, _ = train_lightgcn(
        DATA, LightGCNConfig(dim=8), TrainConfig(max_epochs=2, patience=2, progress=False)
    )
    path = tmp_path_factory.mktemp("lightgcn") / "model.pt"
    ModelArtifact(LightGCNVictim(model), DATA.fingerprint, {"note": "tiny"}, DATA).save(path)
    return path


async def test_a_world_on_a_lightgcn_artifact_injects_serves_and_retrains(
    lightgcn_artifact: Path, tmp_path: Path
) -> None:
    loaded = ModelArtifact.load(lightgcn_artifact)
    local = loaded.victim.serving_state(DATA)
    cold = int(np.argmin(local.graph.degree))
    profile = [cold, *range(10, 19)]
    async with serving(settings_for(lightgcn_artifact, tmp_path / "ledger.db")) as client:
        info = (await client.get("/admin/model", headers=ADMIN)).json()
        assert info["victim"] == "lightgcn" and info["config"]["n_layers"] == 3
        assert info["model_fingerprint"] == loaded.weights_fingerprint
        created = (await client.post("/admin/worlds", json={}, headers=ADMIN)).json()
        key = {"X-API-Key": created["api_key"]}
        user = created["pretend_users"][0]
        before = (await client.get(f"/topk/{user}", params={"k": 20}, headers=key)).json()
        assert before["items"] == local.topk(user, 20).tolist()

        injected = await client.post("/inject_user", json={"items": profile}, headers=key)
        assert injected.status_code == 201, injected.text
        assert injected.json()["user_id"] == local.add_user(np.array(profile))
        after = (await client.get(f"/topk/{user}", params={"k": 20}, headers=key)).json()
        assert after["items"] == local.topk(user, 20).tolist()

        job = await retrain(client, created["world_id"], epochs=1)
        assert job["embedding_epoch"] == 2  # one for the injection, one now
        tuned = local.retrained(DATA, epochs=1)  # same seed: the same fine-tune
        answer = (await client.get(f"/topk/{user}", params={"k": 20}, headers=key)).json()
        assert answer["items"] == tuned.topk(user, 20).tolist()
        assert not np.array_equal(tuned.scores(np.array([user])), local.scores(np.array([user])))
