"""Every victim family besides PinSage behind the one interface: trained by the CLI,
stored and loaded bit-exactly, served over HTTP (worlds, injections, top-k, admin model,
scheduled retrain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_server.artifact import ModelArtifact
from recsys_server.cli import main as recsys_main
from recsys_server.training import TrainConfig
from recsys_server.victims.itemknn import ItemKNNConfig, ItemKNNVictim
from tests.pinsage_fixtures import tiny_data
from tests.service_fixtures import ADMIN, retrain, serving, settings_for

DATA = tiny_data()
# the CLI's cheapest training: a grid is still tuned (item-kNN's N and shrinkage, MF's L2)
CHEAP = ["--max-epochs", "2", "--patience", "1", "--dim", "8", "--lr", "0.01", "--json"]
VICTIMS = ("itemknn", "mf")


@pytest.fixture(scope="module", params=VICTIMS)
def victim_artifact(
    request: pytest.FixtureRequest, scenario_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """``recsys-server train --victim NAME`` on the tiny scenario."""
    out = tmp_path_factory.mktemp(request.param) / "model.pt"
    arguments = ["train", "--scenario", str(scenario_dir), "--out", str(out), "--no-baselines"]
    assert recsys_main([*arguments, "--victim", request.param, *CHEAP]) == 0
    return request.param, out


def test_the_artifact_round_trips(victim_artifact: tuple[str, Path], tmp_path: Path) -> None:
    name, path = victim_artifact
    loaded = ModelArtifact.load(path)
    assert loaded.victim.name == name
    assert loaded.metrics[loaded.victim.label]["victim"] == name
    again_path = tmp_path / "again.pt"
    ModelArtifact(loaded.victim, loaded.scenario_fingerprint, {}, loaded.data).save(again_path)
    again = ModelArtifact.load(again_path)
    assert again.weights_fingerprint == loaded.weights_fingerprint
    users = np.arange(DATA.n_users)
    first, second = loaded.victim.serving_state(DATA), again.victim.serving_state(DATA)
    np.testing.assert_array_equal(first.scores(users), second.scores(users))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_service_serves_the_victim(
    victim_artifact: tuple[str, Path], tmp_path: Path
) -> None:
    name, artifact = victim_artifact
    async with serving(settings_for(artifact, tmp_path / "ledger.db")) as client:
        model = (await client.get("/admin/model", headers=ADMIN)).json()
        assert model["victim"] == name
        assert model["model_fingerprint"] == ModelArtifact.load(artifact).weights_fingerprint
        created = await client.post("/admin/worlds", json={}, headers=ADMIN)
        world = created.json()
        key = {"X-API-Key": world["api_key"]}
        user = world["pretend_users"][0]
        degree = np.bincount(DATA.train[:, 1], minlength=DATA.n_items)
        profile = np.argsort(-degree, kind="stable")[:12].tolist()
        profile[0] = int(np.argmin(degree))  # a cold item among popular ones
        injected = await client.post("/inject_user", json={"items": profile}, headers=key)
        assert injected.status_code == 201, injected.text
        # the server's answer is the victim's own state with the same injection
        state = ModelArtifact.load(artifact).victim.serving_state(DATA)
        new_user = state.add_user(np.array(profile))
        assert new_user == injected.json()["user_id"]
        for asked in (user, new_user):
            top = await client.get(f"/topk/{asked}", params={"k": 20}, headers=key)
            assert top.status_code == 200
            assert top.json()["items"] == state.topk(asked, 20).tolist()
        job = await retrain(client, world["world_id"], epochs=1)
        assert job["embedding_epoch"] == 2
        usage = await client.get(f"/admin/worlds/{world['world_id']}/usage", headers=ADMIN)
        assert usage.json()["embedding_epoch"] == 2 and usage.json()["injected_users"] == 1
        tuned = state.retrained(DATA, 1)
        after = await client.get(f"/topk/{user}", params={"k": 20}, headers=key)
        assert after.json()["items"] == tuned.topk(user, 20).tolist()


def test_item_knn_reports_the_grid_it_was_trained_with(tmp_path: Path) -> None:
    """The artifact stores the grid the model was chosen from, not the code's default;
    a format-3 file from before the grid was stored still loads and says it is unknown."""
    fixed = ItemKNNConfig(neighbours=7, shrink=3.0)
    victim = ItemKNNVictim.train(DATA, fixed, TrainConfig(progress=False))[0]
    path = tmp_path / "itemknn.pt"
    ModelArtifact(victim, DATA.fingerprint, {}, DATA).save(path)
    config = ModelArtifact.load(path).victim.config_dict()
    assert (config["neighbour_grid"], config["shrink_grid"]) == ([7], [3.0])
    assert list(config["validation_hr10"]) == ["N 7, shrink 3"]
    older = victim.to_payload()
    del older["neighbour_grid"], older["shrink_grid"]
    loaded = ItemKNNVictim.from_payload(older)
    assert loaded.fingerprint() == victim.fingerprint()
    assert (loaded.config_dict()["neighbour_grid"], loaded.config_dict()["shrink_grid"]) == (
        None,
        None,
    )


def test_item_knn_retrains_over_the_grid_it_was_trained_with() -> None:
    """A scheduled retrain re-tunes N and the shrinkage over the model's own grid (3 and 7
    are in no default grid), and so does a retrain of a retrained state."""
    grid = ItemKNNConfig(neighbour_choices=(3, 7), shrink_choices=(1.0,))
    victim = ItemKNNVictim.train(DATA, grid, TrainConfig(progress=False))[0]
    state = victim.serving_state(DATA)
    state.add_user(np.array([0, 1, 2]))
    once = state.retrained(DATA, 1)
    twice = once.retrained(DATA, 1)
    for tuned in (once, twice):
        assert tuned.neighbours in (3, 7) and tuned.shrink == 1.0
    assert once.graph.n_users == state.graph.n_users
