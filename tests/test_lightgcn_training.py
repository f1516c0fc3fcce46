"""Tiny LightGCN models: training improves on an untrained model, is reproducible, keeps
the grid's best point, folds injected users in by the fitted map, round-trips through the
artifact, and fine-tunes on a polluted graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_server.artifact import ModelArtifact
from recsys_server.cli import main as server_main
from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig, LightGCNGrid, item_means
from recsys_server.lightgcn.refresh import LightGCNState
from recsys_server.lightgcn.train import scheduled_retrain, train_lightgcn, train_tuned
from recsys_server.training import TrainConfig
from recsys_server.victims.lightgcn import LightGCNVictim
from shared.scenario import save_scenario
from tests.pinsage_fixtures import tiny_data, tiny_scenario
from tests.test_lightgcn_refresh import assert_equal_to_full_recompute

DATA = tiny_data()
CONFIG = LightGCNConfig(dim=16, lr=0.01)
FAST = TrainConfig(max_epochs=6, patience=6, progress=False)


def graph() -> InteractionGraph:
    return InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)


@pytest.fixture(scope="module")
def trained() -> LightGCN:
    model, history = train_lightgcn(DATA, CONFIG, FAST)
    assert len(history.validation_hr10) == 6
    return model


def test_training_beats_the_untrained_model(trained: LightGCN) -> None:
    torch.manual_seed(0)
    untrained = LightGCN(CONFIG, DATA.n_users, DATA.n_items)
    before = DATA.validation_metrics(LightGCNState(untrained, graph()).scores)["full"]["HR@10"]
    after = DATA.validation_metrics(LightGCNState(trained, graph()).scores)["full"]["HR@10"]
    assert after > before + 0.05


def test_same_seed_same_model() -> None:
    config = TrainConfig(max_epochs=2, patience=2, progress=False)
    first, _ = train_lightgcn(DATA, CONFIG, config)
    second, _ = train_lightgcn(DATA, CONFIG, config)
    other, _ = train_lightgcn(DATA, CONFIG, TrainConfig(max_epochs=2, seed=1, progress=False))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.item_ego.weight, other.item_ego.weight)


def test_the_fold_in_map_fits_the_training_users_better_than_their_item_mean(
    trained: LightGCN,
) -> None:
    users = np.flatnonzero(graph().profile_length(np.arange(DATA.n_users)) > 0)
    means = item_means(trained.item_ego.weight.detach().numpy(), graph(), users)
    egos = trained.user_ego.weight.detach().numpy()[users]
    mapped = means @ trained.fold_in.numpy()
    assert np.square(mapped - egos).sum() < 0.9 * np.square(means - egos).sum()


def test_the_grid_keeps_its_best_point_on_validation() -> None:
    grid = LightGCNGrid(dims=(8,), lrs=(0.01,), l2s=(1e-4, 1.0))
    model, history, validation = train_tuned(
        DATA, grid, TrainConfig(max_epochs=2, patience=2, progress=False)
    )
    assert list(validation) == ["dim=8,lr=0.01,l2=0.0001", "dim=8,lr=0.01,l2=1"]
    best = max(validation, key=validation.__getitem__)
    assert f"l2={model.config.l2:g}" in best and history.best == pytest.approx(
        validation[best], abs=1e-4
    )


def test_the_artifact_round_trips(trained: LightGCN, tmp_path: Path) -> None:
    victim = LightGCNVictim(trained, {"dim=16,lr=0.01,l2=0.0001": 0.5})
    path = tmp_path / "model.pt"
    ModelArtifact(victim, DATA.fingerprint, {"note": "tiny"}, DATA).save(path)
    loaded = ModelArtifact.load(path, DATA.fingerprint)
    assert loaded.victim.name == "lightgcn" and loaded.victim.config_dict()["dim"] == 16
    assert loaded.weights_fingerprint == victim.fingerprint()
    served, direct = loaded.victim.serving_state(DATA), victim.serving_state(DATA)
    users = np.arange(DATA.n_users)
    assert np.array_equal(served.scores(users), direct.scores(users))
    profile = np.arange(5, 25)
    assert served.add_user(profile) == direct.add_user(profile)
    assert np.array_equal(served.scores(users), direct.scores(users))


def test_retraining_on_a_polluted_graph_makes_injected_users_trained(trained: LightGCN) -> None:
    state = LightGCNState(trained, graph())
    cold = int(np.argmin(state.graph.degree))
    injected = [state.add_user(np.array([cold, *range(i, i + 10)])) for i in range(0, 30, 10)]
    state.remove_user(injected[1])
    before = state.scores(np.arange(DATA.n_users))
    retrained = state.retrained(DATA, epochs=2)
    assert retrained.model.n_users == state.graph.n_users  # injected users have ego rows
    assert retrained.graph.injected_users == state.graph.injected_users
    assert not torch.equal(retrained.model.item_ego.weight, trained.item_ego.weight)
    assert np.array_equal(state.scores(np.arange(DATA.n_users)), before)  # self unchanged
    # the retrained state refreshes exactly too, for old and new injections
    retrained.add_user(np.array([cold, 1, 2]))
    retrained.remove_user(injected[0])
    assert_equal_to_full_recompute(retrained)


def test_retraining_keeps_the_best_validation_epoch(trained: LightGCN) -> None:
    """Fine-tuned with a learning rate that ruins the model after one step, the retrain
    returns the weights of its best epoch, not the last."""
    ruined = LightGCN(LightGCNConfig(dim=16, lr=5.0), DATA.n_users, DATA.n_items)
    ruined.load_state_dict(trained.state_dict())
    tuned = scheduled_retrain(ruined, DATA, graph(), epochs=3)
    last, _ = train_lightgcn(
        DATA, ruined.config, TrainConfig(max_epochs=1, progress=False), model=tuned
    )
    best_score = DATA.validation_hr10(LightGCNState(tuned, graph()).scores)
    assert best_score >= DATA.validation_hr10(LightGCNState(last, graph()).scores)


def test_train_command_trains_the_lightgcn_victim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tiny_scenario()
    save_scenario(scenario, tmp_path / "scenario")
    out = tmp_path / "model.pt"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = ["train", "--scenario", str(tmp_path / "scenario"), "--out", str(out),
            "--victim", "lightgcn", "--max-epochs", "1", "--no-baselines", "--json"]  # fmt: skip
    assert server_main(args) == 0
    printed, err = capsys.readouterr()
    assert err == ""  # --json: no progress lines
    results = json.loads(printed)
    assert set(results) == {"LightGCN"} and results["LightGCN"]["victim"] == "lightgcn"
    grid = results["LightGCN"]["config"]["grid_validation_hr10"]
    assert len(grid) == len(LightGCNGrid().configs())
    artifact = ModelArtifact.load(out, scenario.fingerprint)
    assert artifact.victim.name == "lightgcn" and artifact.metrics == results


def test_train_command_narrows_the_grid_to_the_points_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_scenario(tiny_scenario(), tmp_path / "scenario")
    args = ["train", "--scenario", str(tmp_path / "scenario"), "--out", str(tmp_path / "m.pt"),
            "--victim", "lightgcn", "--lightgcn-dims", "8", "--lightgcn-lrs", "0.01",
            "--lightgcn-l2s", "1e-4", "1e-2", "--layers", "1",  # PinSage's layers, not LightGCN's
            "--max-epochs", "1", "--no-baselines", "--json"]  # fmt: skip
    assert server_main(args) == 0
    config = json.loads(capsys.readouterr().out)["LightGCN"]["config"]
    assert set(config["grid_validation_hr10"]) == {
        "dim=8,lr=0.01,l2=0.0001",
        "dim=8,lr=0.01,l2=0.01",
    }
    assert config["dim"] == 8 and config["n_layers"] == 3


@pytest.mark.parametrize(
    "flags",
    [
        ["--lightgcn-dims", "8"],  # the default victim is PinSage
        ["--victim", "mf", "--lightgcn-l2s", "0.1"],
        ["--victim", "lightgcn", "--lightgcn-lrs", "0"],
        ["--victim", "lightgcn", "--lightgcn-dims", "true"],
    ],
)
def test_train_command_refuses_a_lightgcn_grid_it_cannot_use(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    save_scenario(tiny_scenario(), tmp_path / "scenario")
    out = tmp_path / "m.pt"
    arguments = ["train", "--scenario", str(tmp_path / "scenario"), "--out", str(out), *flags]
    code: int | str | None
    try:
        code = server_main(arguments)
    except SystemExit as stopped:  # argparse's own refusals (a value of the wrong type)
        code = stopped.code
    assert code == 2
    assert "lightgcn" in capsys.readouterr().err.lower() and not out.exists()
