"""Exactness of LightGCN's incremental refresh: after any sequence of injections and
removals, every user's and item's final embedding, the scores and the top-k lists equal a
full recompute on the same graph; forks never see each other's injections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from recsys_server.graph import InteractionGraph
from recsys_server.lightgcn.model import LightGCN, LightGCNConfig
from recsys_server.lightgcn.refresh import LightGCNState, full_layers
from tests.injection_operations import replay
from tests.pinsage_fixtures import tiny_data
from tests.test_pinsage_refresh import (
    assert_scores_of_equal_the_catalogue_scores,
    operations,
)

DATA = tiny_data()
# 4: Z_2 changes wherever M_2 did, so layer 4 reads the columns of C at all of them
LAYERS = (1, 2, 3, 4)


def fresh_state(n_layers: int = 3, seed: int = 0) -> LightGCNState:
    """An untrained model (the refresh does not depend on trained weights) with a fold-in
    map that is not the identity, so the rule's map is exercised too."""
    torch.manual_seed(seed)
    model = LightGCN(LightGCNConfig(dim=8, n_layers=n_layers), DATA.n_users, DATA.n_items)
    model.fold_in.copy_(torch.eye(8) + 0.3 * torch.randn(8, 8))
    return LightGCNState(model, InteractionGraph(DATA.train, DATA.n_users, DATA.n_items))


def live_users(state: LightGCNState) -> np.ndarray:
    return np.array([*range(DATA.n_users), *state.graph.injected_users], dtype=np.int64)


def reference_topk(scores: np.ndarray, held: np.ndarray, k: int) -> list[int]:
    ranked = np.lexsort((np.arange(len(scores)), -scores))
    return [int(i) for i in ranked if i not in set(held.tolist())][:k]


def assert_equal_to_full_recompute(state: LightGCNState) -> None:
    users, items = full_layers(state.model, state.graph)
    live = live_users(state)
    item_final, user_final = np.mean(items, axis=0), np.mean(users, axis=0)[live]
    for k in range(1, state.n_layers + 1):
        assert np.abs(state.item_rows(k, np.arange(DATA.n_items)) - items[k]).max() <= 1e-5
    for k in range(state.n_layers + 1):
        assert np.abs(state.user_rows(k, live) - users[k][live]).max() <= 1e-5
    assert np.abs(state.item_final.dense() - item_final).max() <= 1e-5
    assert np.abs(state.user_vectors(live) - user_final).max() <= 1e-5
    expected = user_final @ item_final.T
    assert np.abs(state.scores(live) - expected).max() <= 1e-5
    for position in [*range(0, DATA.n_users, 40), *range(DATA.n_users, len(live))]:
        user = int(live[position])
        assert state.topk(user, 10).tolist() == reference_topk(
            expected[position], state.graph.profile(user), 10
        )


@pytest.mark.parametrize("n_layers", LAYERS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_incremental_equals_full_recompute(n_layers: int, ops) -> None:
    state = fresh_state(n_layers)
    replay(state, ops)
    assert_equal_to_full_recompute(state)


def test_removing_every_injection_restores_the_clean_state() -> None:
    state = fresh_state()
    clean_items, clean_scores = state.item_final.dense(), state.scores(np.arange(DATA.n_users))
    # many injections: the items' rows are updated by differences, which must not drift
    rng = np.random.default_rng(0)
    users = [state.add_user(rng.choice(DATA.n_items, 20, replace=False)) for _ in range(100)]
    assert np.abs(state.item_final.dense() - clean_items).max() > 1e-4
    rng.shuffle(users)
    for user in users:
        state.remove_user(user)
    assert np.abs(state.item_final.dense() - clean_items).max() <= 1e-6
    assert np.abs(state.scores(np.arange(DATA.n_users)) - clean_scores).max() <= 1e-6


def test_an_injection_reaches_the_items_of_its_items_holders_and_no_further() -> None:
    """Item rows change exactly on the items of the holders of the injected profile (with
    three layers); every other row stays the shared base's."""
    state = fresh_state()
    graph = state.graph
    degree = np.asarray(graph.degree)
    profile = np.argsort(degree, kind="stable")[:2]  # the two coldest items
    holders = np.unique(graph.holders_of(profile)[1])
    reach = np.union1d(profile, np.unique(graph.profiles_of(holders)[1]))
    before = state.item_final.dense()
    state.add_user(profile)
    assert np.array_equal(state.item_final.private_rows(), reach)
    assert len(reach) < DATA.n_items
    moved = np.flatnonzero(np.abs(state.item_final.dense() - before).max(axis=1) > 0)
    assert set(moved.tolist()) <= set(reach.tolist())
    assert_equal_to_full_recompute(state)


def test_forks_share_the_base_and_never_see_each_others_injections() -> None:
    """Each fork (and a fork of a fork) ends as a state that only ever had its own
    injections; the clean state and its shared base never change."""
    clean = fresh_state()
    clean_items, clean_scores = clean.item_final.dense(), clean.scores(np.arange(10))
    histories: dict[str, list[tuple[str, Any]]] = {
        "first": [("add", [0, 7, 30]), ("add", [1, 8, 31]), ("add", [2, 9]), ("remove", 1)],
        "second": [("add", [1, 2, 3])],
        "third": [("remove", 0), ("add", [5, 6])],  # after first's, on a fork of it
    }
    first, second = clean.fork(), clean.fork()
    assert first.item_final.base is clean.item_final.base  # shared, not copied
    replay(first, histories["first"])
    third = first.fork()
    replay(second, histories["second"])
    replay(third, histories["third"])
    for world, history in (
        (first, histories["first"]),
        (second, histories["second"]),
        (third, histories["first"] + histories["third"]),
    ):
        alone = fresh_state()
        replay(alone, history)
        assert world.graph.injected_users == alone.graph.injected_users
        users = live_users(alone)
        assert np.abs(world.scores(users) - alone.scores(users)).max() <= 1e-5
        assert len(world.item_final.private_rows()) < DATA.n_items
    assert np.array_equal(clean.item_final.dense(), clean_items)
    assert np.array_equal(clean.scores(np.arange(10)), clean_scores)
    assert clean.graph.injected_users == []


def test_scores_of_chosen_items_equal_the_catalogue_scores() -> None:
    assert_scores_of_equal_the_catalogue_scores(fresh_state())
