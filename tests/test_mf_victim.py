"""MF's serving: under the frozen model an injection moves nobody else's scores;
scheduled retraining on the polluted graph does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_server.artifact import ModelArtifact
from recsys_server.training import TrainConfig
from recsys_server.victims.mf import MFConfig, MFState, MFVictim
from tests.pinsage_fixtures import tiny_data

DATA = tiny_data()


@pytest.fixture(scope="module")
def victim() -> MFVictim:
    train = TrainConfig(lr=0.01, max_epochs=3, patience=3, progress=False)
    return MFVictim.train(DATA, MFConfig(dim=8, l2=1e-2), train)[0]


def target_and_profile() -> tuple[int, np.ndarray]:
    degree = np.bincount(DATA.train[:, 1], minlength=DATA.n_items)
    target = int(np.argmin(degree))
    popular = [i for i in np.argsort(-degree, kind="stable").tolist() if i != target][:9]
    return target, np.array([target, *popular])


def test_a_frozen_injection_moves_no_other_users_scores(victim: MFVictim) -> None:
    state = victim.serving_state(DATA)
    users = np.arange(DATA.n_users)
    before = state.scores(users)
    _, profile = target_and_profile()
    injected = [state.add_user(profile) for _ in range(10)]
    np.testing.assert_array_equal(state.scores(users), before)
    # the injected users are folded in: the mean of their items' factors
    expected = state.item_factors[profile].mean(axis=0) @ state.item_factors.T + state.item_bias
    np.testing.assert_allclose(state.scores(np.array(injected[:1]))[0], expected, rtol=1e-6)
    assert not set(state.topk(injected[0], 20).tolist()) & set(profile.tolist())
    for user in injected:
        state.remove_user(user)
    np.testing.assert_array_equal(state.scores(users), before)


def test_retraining_on_the_polluted_graph_moves_other_users_lists(victim: MFVictim) -> None:
    state = victim.serving_state(DATA)
    users = np.arange(DATA.n_users)
    target, profile = target_and_profile()
    for _ in range(20):
        state.add_user(profile)
    before = state.scores(users)
    tops = [state.topk(int(user), 10).tolist() for user in users]
    tuned = state.retrained(DATA, epochs=2)
    assert isinstance(tuned, MFState)
    np.testing.assert_array_equal(state.scores(users), before)  # the state itself is kept
    after = tuned.scores(users)
    assert np.abs(after - before).max() > 1e-3
    moved = sum(tuned.topk(int(u), 10).tolist() != top for u, top in zip(users, tops, strict=True))
    assert moved > 0
    # the injected users are training users of the tuned model: learned rows, not fold-in
    injected = np.array(tuned.graph.injected_users)
    assert len(tuned.user_rows) == tuned.graph.n_users
    assert not np.allclose(tuned.user_vectors(injected), tuned.fold_in(profile))
    assert (after[:, target] > before[:, target]).mean() > 0.5  # the copies pulled it up


def test_loading_an_mf_artifact_leaves_the_global_rng_alone(
    victim: MFVictim, tmp_path: Path
) -> None:
    """Loading builds a BPRMF before its weights are read in; that build draws from a
    generator of its own, so a caller's seeded global stream goes on as if nothing ran."""
    path = tmp_path / "mf.pt"
    ModelArtifact(victim, DATA.fingerprint, {"note": "tiny"}, DATA).save(path)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    loaded = ModelArtifact.load(path, DATA.fingerprint).victim
    assert torch.equal(torch.get_rng_state(), before)
    assert loaded.fingerprint() == victim.fingerprint()
