"""Item-kNN's incremental update is exact: after any sequence of injections and removals,
the neighbour lists, scores and top-k equal a state built from scratch on the same graph;
forks are isolated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_server.graph import InteractionGraph
from recsys_server.victims.itemknn import (
    CountTable,
    ItemKNNConfig,
    NeighbourState,
    best_of_rows,
    rank_all,
    similarity_rows,
    tune,
)
from tests.injection_operations import operation_lists, replay
from tests.pinsage_fixtures import tiny_data

DATA = tiny_data()
MAX_PROFILE = 40
# (neighbours, shrink, dense counts): a short list empties its reserve often (the
# recompute path), a list longer than the catalogue never has a floor; shrinkage 0
# gives many exact ties (one shared user of two single-holder items: similarity 1)
CONFIGS = {
    "one-neighbour": (1, 0.0, False),
    "three-shrink": (3, 10.0, True),
    "ten": (10, 0.0, False),
    "whole-catalogue": (300, 2.0, False),
}


def fresh_state(name: str) -> NeighbourState:
    neighbours, shrink, dense = CONFIGS[name]
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    return NeighbourState(graph, neighbours, shrink, dense_counts=dense)


def live_users(state: NeighbourState) -> np.ndarray:
    return np.array([*range(DATA.n_users), *state.graph.injected_users], dtype=np.int64)


def assert_equal_to_full_build(state: NeighbourState) -> None:
    # counts in the default (sparse) form: the dense configurations are checked against it
    full = NeighbourState(state.graph, state.neighbours, state.shrink)
    items = np.arange(DATA.n_items)
    mine, theirs = state.neighbour_lists(items), full.neighbour_lists(items)
    np.testing.assert_array_equal(mine[0], theirs[0])
    assert np.abs(mine[1] - theirs[1]).max() <= 1e-12
    users = live_users(state)
    assert np.abs(state.scores(users) - full.scores(users)).max() <= 1e-5
    for user in users[:: max(1, len(users) // 25)].tolist() + state.graph.injected_users:
        np.testing.assert_array_equal(state.topk(user, 10), full.topk(user, 10))


DATA_DEGREE = np.bincount(DATA.train[:, 1], minlength=DATA.n_items)
profiles = st.one_of(
    st.lists(st.integers(0, DATA.n_items - 1), min_size=1, max_size=MAX_PROFILE, unique=True),
    st.integers(0, DATA.n_items - 1).map(lambda item: [item]),
    # the most held items: their pairs sit in most lists
    st.integers(2, MAX_PROFILE).map(lambda n: np.argsort(-DATA_DEGREE, kind="stable")[:n].tolist()),
)
operations = operation_lists(profiles, max_size=10)


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_incremental_equals_full_build(name: str, ops) -> None:
    state = fresh_state(name)
    replay(state, ops)
    assert_equal_to_full_build(state)


def test_a_fork_is_isolated_and_removal_restores_the_clean_lists() -> None:
    clean = fresh_state("three-shrink")
    users = np.arange(DATA.n_users)
    before = clean.scores(users)
    items = np.arange(DATA.n_items)
    lists = clean.neighbour_lists(items)[0]
    world, other = clean.fork(), clean.fork()
    popular = np.argsort(-DATA_DEGREE, kind="stable")[:15]
    injected = [world.add_user(popular) for _ in range(5)]
    # the injections moved the world's lists and its users' scores
    assert not np.array_equal(world.neighbour_lists(items)[0], lists)
    assert np.abs(world.scores(users) - before).max() > 0
    # and nothing of the clean state or a sibling fork
    np.testing.assert_array_equal(clean.scores(users), before)
    np.testing.assert_array_equal(other.scores(users), before)
    np.testing.assert_array_equal(clean.neighbour_lists(items)[0], lists)
    assert clean.graph.injected_users == other.graph.injected_users == []
    assert_equal_to_full_build(world)
    for user in injected:
        world.remove_user(user)
    np.testing.assert_array_equal(world.neighbour_lists(items)[0], lists)
    assert np.abs(world.scores(users) - before).max() <= 1e-12


def test_the_injected_user_is_scored_from_its_items_lists() -> None:
    state = fresh_state("ten")
    profile = np.array([3, 17, 42])
    user = state.add_user(profile)
    index, value = state.neighbour_lists(profile)
    expected = np.zeros(DATA.n_items)
    for row_index, row_value in zip(index, value, strict=True):
        used = row_index >= 0
        expected[row_index[used]] += row_value[used]
    np.testing.assert_allclose(state.scores(np.array([user]))[0] - expected, 0, atol=1e-6)
    # items outside its lists are ordered by popularity alone
    outside = np.flatnonzero(expected == 0)
    ranked = outside[np.argsort(-state.scores(np.array([user]))[0][outside], kind="stable")]
    assert (np.diff(state.graph.degree[ranked]) <= 0).all()
    assert not set(state.topk(user, 20).tolist()) & set(profile.tolist())


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.integers(0, 4), min_size=6, max_size=30),
    width=st.integers(1, 8),
)
def test_best_of_rows_ranks_by_similarity_then_id(values: list[int], width: int) -> None:
    """Against a sort of every item by (similarity descending, id ascending); small
    integers make ties at the cut the common case."""
    row = np.array(values, dtype=np.float64) / 4
    row[0] = 0.0  # the row's own item
    index, value, floor_value, floor_id = best_of_rows(row[None, :], width)
    ranked = [i for i in np.lexsort((np.arange(len(row)), -row)).tolist() if row[i] > 0]
    expected = ranked[:width] + [-1] * max(0, width - len(ranked))
    assert index[0].tolist() == expected
    np.testing.assert_array_equal(value[0], np.where(index[0] >= 0, row[index[0]], 0.0))
    if len(ranked) > width:
        assert (floor_value[0], floor_id[0]) == (row[ranked[width]], ranked[width])
    else:
        assert (floor_value[0], floor_id[0]) == (0.0, -1)


def test_a_row_whose_candidates_run_short_is_recomputed_from_its_counts() -> None:
    """Repeated injections of one row's list and reserve push each one's similarity to
    it below the floor (their holders grow, their co-occurrences with the row do not):
    the row must be recomputed, and lands on items it had never kept."""
    state = fresh_state("one-neighbour")
    items = np.arange(DATA.n_items)
    candidates = np.concatenate([state.list_index[items], state.reserve[items]], axis=1)
    value = state.similarities(items, candidates)
    floor = state.floor_value[items]
    # injections until a candidate of similarity v and degree d falls below floor f:
    # v sqrt(d / (d + t)) < f, so t > d (v^2 / f^2 - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = (state.graph.degree[candidates] * (value**2 / floor[:, None] ** 2 - 1)).max(axis=1)
    needed[(floor == 0) | (candidates < 0).any(axis=1)] = np.inf
    row = int(np.argmin(needed))
    profile = candidates[row]
    recomputed = 0
    for _ in range(int(needed[row]) + 1):
        state.add_user(profile)
        recomputed += state.last_update["rows_recomputed"] - len(profile)
        assert_equal_to_full_build(state)
    assert recomputed > 0
    assert not set(state.neighbour_lists(np.array([row]))[0][0].tolist()) & set(profile.tolist())


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32 - 1))
def test_scores_of_chosen_items_are_the_catalogue_scores_bit_for_bit(
    name: str, ops, seed: int
) -> None:
    """The sampled evaluation's path (each user's own candidates) gives exactly the
    whole-catalogue scores, so a tie between the target and a negative ranks the same
    whichever path scored it; users repeat, and the empty profile is asked too."""
    state = fresh_state(name)
    replay(state, ops)
    rng = np.random.default_rng(seed)
    users = rng.choice(live_users(state), size=30)
    items = rng.integers(0, DATA.n_items, size=(len(users), 101))
    expected = np.take_along_axis(state.scores(users), items, axis=1)
    np.testing.assert_array_equal(state.scores_of(users, items), expected)
    # a user with no items: the popularity tie-break alone
    empty = np.array([state.add_user(np.array([], dtype=np.int64))])
    expected = np.take_along_axis(state.scores(empty), items[:1], axis=1)
    np.testing.assert_array_equal(state.scores_of(empty, items[:1]), expected)


def assert_lists_are_best_of_rows(state: NeighbourState, similarities: np.ndarray) -> None:
    """The state's lists and reserve, list similarities and floors are
    :func:`best_of_rows` of ``similarities`` (every item's row) at its width."""
    items = np.arange(DATA.n_items)
    n = state.neighbours
    index, value, floor_value, floor_id = best_of_rows(similarities, 2 * n)
    mine = np.concatenate([state.list_index[items], state.reserve[items]], axis=1)
    np.testing.assert_array_equal(mine, index)
    np.testing.assert_array_equal(state.list_value[items], value[:, :n])
    np.testing.assert_array_equal(state.floor_value[items], floor_value)
    np.testing.assert_array_equal(state.floor_id[items], floor_id)


@pytest.mark.parametrize("dense", [False, True])
def test_every_grid_point_cut_from_one_ranking_equals_its_own_lists(dense: bool) -> None:
    """A grid's points share the count table and one ranking per shrinkage at the widest
    lists (what ``tune`` does, so that a scheduled retrain sorts three times, not
    eighteen): each point's lists, reserve and floors are :func:`best_of_rows` of its
    own similarities, on a graph with injected users too, and ``tune`` scores and
    chooses as if each point were built alone."""
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    popular = np.argsort(-DATA_DEGREE, kind="stable")
    for size in (2, 15, 40):
        graph.add_user(popular[:size])
    counts = CountTable.of(graph, dense)
    items = np.arange(DATA.n_items)
    degree = graph.degree.astype(np.float64)
    grid = ItemKNNConfig(neighbour_choices=(1, 3, 10, 300), shrink_choices=(0.0, 2.0, 10.0))
    for shrink in grid.shrink_grid():
        ranked = rank_all(counts, graph.degree, shrink, 600, progress=False)
        similarities = similarity_rows(counts, degree, items, shrink)
        for neighbours in grid.neighbour_grid():
            cut = NeighbourState(graph, neighbours, shrink, counts=counts, ranked=ranked)
            assert_lists_are_best_of_rows(cut, similarities)
    narrow = rank_all(counts, graph.degree, 0.0, 19, progress=False)
    with pytest.raises(ValueError, match="too narrow"):
        NeighbourState(graph, 10, 0.0, counts=counts, ranked=narrow)
    chosen, _, validation = tune(DATA, graph, grid, progress=False)
    scores = {
        f"N {n}, shrink {s:g}": DATA.validation_hr10(NeighbourState(graph, n, s).scores)
        for n, s in grid.grid()
    }
    assert validation == scores
    best = max(scores, key=lambda point: scores[point])  # the first on ties
    assert best == f"N {chosen.neighbours}, shrink {chosen.shrink:g}"
    # the state tune returns (what a retrain serves) carries its full reserve and floors
    similarities = similarity_rows(counts, degree, items, 2.0)
    for neighbours in (3, 10):
        one_point = ItemKNNConfig(neighbour_choices=(neighbours,), shrink_choices=(2.0,))
        assert_lists_are_best_of_rows(tune(DATA, graph, one_point, progress=False)[0], similarities)
