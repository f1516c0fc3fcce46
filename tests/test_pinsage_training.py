"""Tiny models: training improves on an untrained model, is reproducible, and the
artifact round-trips; the baselines fit on the same split."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.cli import main as server_main
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.pinsage.train import scheduled_retrain, train_pinsage
from recsys_server.reference_recommenders import BPRMF, EASE, BPRConfig, MostPopular
from recsys_server.training import TrainConfig
from recsys_server.victims.pinsage import PinSageVictim
from shared.scenario import save_scenario
from tests.pinsage_fixtures import tiny_data, tiny_scenario

DATA = tiny_data()
CONFIG = PinSageConfig(dim=16, walks=WalkConfig(n_walks=16, n_neighbours=5))
FAST = TrainConfig(lr=0.01, max_epochs=6, patience=6, progress=False)


def state_of(model: PinSage) -> EmbeddingState:
    return EmbeddingState(model, InteractionGraph(DATA.train, DATA.n_users, DATA.n_items),
                          DATA.content)  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> PinSage:
    model, history = train_pinsage(DATA, CONFIG, FAST)
    assert len(history.validation_hr10) == 6
    return model


def test_training_beats_the_untrained_model(trained: PinSage) -> None:
    torch.manual_seed(0)
    untrained = PinSage(CONFIG, DATA.content.shape[1], DATA.n_items)
    before = DATA.validation_metrics(state_of(untrained).scores)["full"]["HR@10"]
    after = DATA.validation_metrics(state_of(trained).scores)["full"]["HR@10"]
    assert after > before + 0.05


def test_same_seed_same_model() -> None:
    config = TrainConfig(lr=0.01, max_epochs=2, patience=2, progress=False)
    first, _ = train_pinsage(DATA, CONFIG, config)
    second, _ = train_pinsage(DATA, CONFIG, config)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name


def test_retraining_on_a_polluted_graph_changes_the_weights(trained: PinSage) -> None:
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    for _ in range(5):
        graph.add_user(np.array([0, 1, 2]))
    before = copy.deepcopy(trained.state_dict())
    tuned = scheduled_retrain(trained, DATA, graph, epochs=1)
    assert not torch.equal(tuned.output.weight, trained.output.weight)
    for name, value in trained.state_dict().items():  # the served model is left as it was
        assert torch.equal(value, before[name]), name


def test_artifact_round_trip_and_fingerprint_check(trained: PinSage, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    ModelArtifact(PinSageVictim(trained), "f" * 64, {"note": 1}).save(path)
    loaded = ModelArtifact.load(path, "f" * 64)
    users = np.arange(20)
    assert np.allclose(
        loaded.victim.serving_state(DATA).scores(users), state_of(trained).scores(users)
    )
    assert loaded.metrics == {"note": 1}
    with pytest.raises(ArtifactError, match="not on this scenario"):
        ModelArtifact.load(path, "0" * 64)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="not a model artifact"):
        ModelArtifact.load(tmp_path / "junk.pt")
    with pytest.raises(ArtifactError, match="no model artifact"):
        ModelArtifact.load(tmp_path / "missing.pt")


def test_pinsage_behind_the_victim_interface_is_the_model_it_was(
    trained: PinSage, tmp_path: Path
) -> None:
    """A model file of format version 2 (PinSage's fields at the top level, no victim
    named) loads as the same PinSage: same weights fingerprint (sha256 of the state dict,
    as version 2 computed it), same scores, same top-k; so every served model and every
    recorded run key stays valid."""
    path = tmp_path / "v2.pt"
    torch.save(
        {
            "format_version": 2,
            "config": trained.config.to_dict(),
            "n_content": trained.n_content,
            "n_items": trained.n_items,
            "state_dict": trained.state_dict(),
            "scenario_fingerprint": "f" * 64,
            "metrics": {},
            "data": None,
            "training_key": None,
        },
        path,
    )
    loaded = ModelArtifact.load(path)
    assert loaded.victim.name == "pinsage"
    digest = hashlib.sha256()
    for name, tensor in sorted(trained.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    assert loaded.weights_fingerprint == digest.hexdigest()
    served, direct = loaded.victim.serving_state(DATA), state_of(trained)
    users = np.arange(DATA.n_users)
    assert np.array_equal(served.scores(users), direct.scores(users))
    assert served.topk(3, 10).tolist() == direct.topk(3, 10).tolist()
    # a victim this version does not know is named in the refusal
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": 3, "victim": "deepfm"}, path)
    with pytest.raises(ArtifactError, match=r"victim 'deepfm'.*it knows .*pinsage"):
        ModelArtifact.load(path)


def test_baselines_fit_and_rank_sensibly() -> None:
    popular = MostPopular(DATA)
    ease = EASE(DATA, l2=100.0)
    bpr = BPRMF.trained(DATA, BPRConfig(dim=16), TrainConfig(lr=0.01, max_epochs=3, progress=False))
    for model in (popular, ease, bpr):
        metrics = DATA.test_metrics(model.score)
        assert metrics["sampled"]["HR@10"] > 0.2  # chance is 10/101
    assert np.argmax(popular.score(np.array([0]))[0]) == np.argmax(
        np.bincount(DATA.train[:, 1], minlength=DATA.n_items)
    )


def test_tuned_bpr_keeps_the_l2_weight_with_the_best_validation() -> None:
    bpr, validation = BPRMF.tuned(DATA, TrainConfig(lr=0.01, max_epochs=3, progress=False), dim=16)
    assert set(validation) == set(BPRMF.L2_GRID)
    assert bpr.l2 == max(validation, key=validation.__getitem__)
    assert DATA.validation_hr10(bpr.score) == pytest.approx(validation[bpr.l2])


@pytest.mark.slow  # trains PinSage and the three reference recommenders end to end
def test_train_command_writes_artifact_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tiny_scenario()
    save_scenario(scenario, tmp_path / "scenario")
    out = tmp_path / "model.pt"
    args = ["train", "--scenario", str(tmp_path / "scenario"), "--out", str(out), "--dim", "8",
            "--walks", "8", "--max-epochs", "2", "--json"]  # fmt: skip
    # --json prints the JSON and nothing else, even on a terminal (no progress lines)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert server_main(args) == 0
    printed, err = capsys.readouterr()
    assert err == ""
    [line] = printed.splitlines()
    results = json.loads(line)
    assert set(results) == {"PinSage", "MostPopular", "BPR-MF", "EASE"}
    for name in results:
        for protocol in ("sampled", "full"):
            assert set(results[name]["all"][protocol]) == {
                f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20)
            }
    artifact = ModelArtifact.load(out, scenario.fingerprint)
    assert artifact.victim.config_dict()["dim"] == 8 and artifact.metrics == results


def test_train_command_shows_progress_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    save_scenario(tiny_scenario(), tmp_path / "scenario")
    args = ["train", "--scenario", str(tmp_path / "scenario"), "--out", str(tmp_path / "m.pt"),
            "--dim", "8", "--walks", "8", "--max-epochs", "2", "--patience", "1",
            "--no-baselines"]  # fmt: skip
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr, as a terminal
    assert server_main(args) == 0
    out, err = capsys.readouterr()
    # every epoch of PinSage, with its validation HR@10, the time taken and left
    for epoch in (1, 2):
        assert re.search(rf"PinSage: epoch {epoch}/2, val HR@10 0\.\d{{4}}, best ", err), err
    assert "elapsed, " in err and " left]" in err
    assert "model written to" in out  # the summary stays on stdout
    # the baselines' tuning (what `train` and `prepare --baselines` run after PinSage):
    # every L2 weight of BPR-MF and of EASE
    BPRMF.tuned(DATA, TrainConfig(lr=0.01, max_epochs=2, progress=True), dim=8)
    EASE(DATA, progress=True)
    err = capsys.readouterr().err
    grid = len(BPRMF.L2_GRID)
    assert all(f"BPR-MF {i}/{grid} (l2 " in err for i in range(1, grid + 1))
    assert f"EASE: L2 weight {len(EASE.GRID)}/{len(EASE.GRID)}" in err


def test_train_command_bad_input(tmp_path: Path, capsys) -> None:
    code = server_main(["train", "--scenario", str(tmp_path), "--out", str(tmp_path / "m.pt")])
    assert code == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--weight-decay", "-1e-4", "weight decay >= 0"), ("--lr", "0", "lr must be > 0"),
     ("--patience", "0", "patience must be at least 1")],
)  # fmt: skip
def test_train_command_refuses_bad_training_settings(
    tmp_path: Path, capsys, flag: str, value: str, message: str
) -> None:
    save_scenario(tiny_scenario(), tmp_path / "scenario")
    out = tmp_path / "model.pt"
    code = server_main(["train", "--scenario", str(tmp_path / "scenario"), "--out", str(out),
                        f"{flag}={value}"])  # fmt: skip
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
