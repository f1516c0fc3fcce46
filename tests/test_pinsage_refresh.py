"""Exactness of the incremental refresh: after any sequence of injections and removals,
the live state equals a full recompute on the same graph."""

from __future__ import annotations

import copy
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.pinsage.overlay import BATCH, RowOverlay, every_row
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.sampler import (
    WalkConfig,
    hash_of,
    holder_priority,
    neighbourhoods_of,
    unit_of,
)
from recsys_server.victims.base import ServingState
from tests.injection_operations import operation_lists, replay
from tests.pinsage_fixtures import tiny_data

DATA = tiny_data()
MAX_PROFILE = 50
CONFIGS = {
    "default": PinSageConfig(dim=8, walks=WalkConfig(n_walks=16, n_neighbours=5)),
    "degree-steps": PinSageConfig(
        dim=8, degree_steps_per_octave=4, walks=WalkConfig(n_walks=16, n_neighbours=5)
    ),
    "two-hop-residual-no-degree": PinSageConfig(
        dim=8,
        residual=True,
        use_degree=False,
        variant="content+id",
        walks=WalkConfig(n_walks=16, max_hops=3, restart=0.3, n_neighbours=5),
    ),
    "content-one-layer": PinSageConfig(
        dim=8, variant="content", n_layers=1, walks=WalkConfig(n_walks=8, n_neighbours=3)
    ),
}


def fresh_state(config: PinSageConfig) -> EmbeddingState:
    torch.manual_seed(0)
    model = PinSage(config, DATA.content.shape[1], DATA.n_items)
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    return EmbeddingState(model, graph, DATA.content)


def assert_equal_to_full_recompute(state: EmbeddingState) -> None:
    full = EmbeddingState(state.model, state.graph, DATA.content)
    assert np.array_equal(state.hood_index.dense(), full.hood_index.dense())
    assert np.array_equal(state.hood_weight.dense(), full.hood_weight.dense())
    for mine, theirs in zip(state.hidden, full.hidden, strict=True):
        assert np.abs(mine.dense() - theirs.dense()).max() <= 1e-5
    assert np.abs(state.item_vectors.dense() - full.item_vectors.dense()).max() <= 1e-5
    assert np.abs(state.item_bias.dense() - full.item_bias.dense()).max() <= 1e-5
    users = np.array([*range(DATA.n_users), *state.graph.injected_users], dtype=np.int64)
    assert np.abs(state.user_vectors(users) - full.user_vectors(users)).max() <= 1e-5


profiles = st.one_of(
    st.lists(st.integers(0, DATA.n_items - 1), min_size=1, max_size=MAX_PROFILE, unique=True),
    st.integers(0, DATA.n_items - 1).map(lambda item: [item]),
    st.permutations(range(DATA.n_items)).map(lambda items: items[:MAX_PROFILE]),
)
operations = operation_lists(profiles, max_size=8)


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_incremental_equals_full_recompute(name: str, ops) -> None:
    state = fresh_state(CONFIGS[name])
    replay(state, ops)
    assert_equal_to_full_recompute(state)


def test_removing_every_injection_restores_the_clean_state() -> None:
    state = fresh_state(CONFIGS["default"])
    clean = state.item_vectors.dense()
    clean_scores = state.scores(np.arange(10))
    users = [state.add_user(np.arange(i, i + 20)) for i in range(0, 60, 20)]
    assert not np.array_equal(state.item_vectors.dense(), clean)
    for user in users:
        state.remove_user(user)
    assert np.abs(state.item_vectors.dense() - clean).max() <= 1e-6
    assert np.abs(state.scores(np.arange(10)) - clean_scores).max() <= 1e-5


def test_injection_changes_other_users_lists_only_through_the_graph() -> None:
    state = fresh_state(CONFIGS["default"])
    target = int(np.argmin(state.graph.degree))
    before = state.scores(np.arange(DATA.n_users))[:, target]
    untouched = [i for i in range(DATA.n_items) if i != target][:5]
    for _ in range(10):
        state.add_user(np.array([target, *untouched]))
    after = state.scores(np.arange(DATA.n_users))[:, target]
    assert not np.allclose(before, after)
    # the new users' own items are excluded from their top-k
    user = state.graph.injected_users[-1]
    assert not set(state.topk(user, 20).tolist()) & {target, *untouched}


def test_scores_of_chosen_items_equal_the_catalogue_scores() -> None:
    """``scores_of`` (each user's own candidates, as the sampled evaluation asks) agrees
    with the whole-catalogue scores, before and after injections."""
    assert_scores_of_equal_the_catalogue_scores(fresh_state(CONFIGS["default"]))


def assert_scores_of_equal_the_catalogue_scores(state: ServingState) -> None:
    """Before and after each of three injections (seeded)."""
    rng = np.random.default_rng(3)
    users = np.arange(DATA.n_users)
    for _ in range(3):
        items = rng.integers(0, DATA.n_items, size=(len(users), 7))
        expected = np.take_along_axis(state.scores(users), items, axis=1)
        np.testing.assert_allclose(state.scores_of(users, items), expected, atol=1e-5)
        state.add_user(rng.choice(DATA.n_items, 15, replace=False))


def walk_from(graph: InteractionGraph, item: int, config: WalkConfig) -> tuple:
    hoods = neighbourhoods_of(graph, config, np.array([item]))
    used = hoods.weight[0] > 0
    return hoods.index[0][used], hoods.weight[0][used], hoods.through[0], hoods.cutoff[0]


def reference_walks(graph: InteractionGraph, item: int, config: WalkConfig) -> tuple:
    """The sampler's definition, one walk and one hop at a time (the test's oracle)."""
    holders = graph.holders(item)
    if len(holders) == 0:
        return [], [], frozenset()
    starters = sorted(holders.tolist(), key=lambda u: int(holder_priority(config, item, u)[0]))
    starters = starters[: config.n_walks]
    visits: dict[int, int] = {}
    through: set[int] = set()

    def draw(first: int, cycle: int, tag: int) -> float:
        return float(unit_of(hash_of(config.seed, item, first, cycle, tag))[0])

    for walk in range(config.n_walks):
        first, cycle = starters[walk % len(starters)], walk // len(starters)
        profile = graph.profile(first)
        current = int(profile[int(draw(first, cycle, 1) * len(profile))])
        visits[current] = visits.get(current, 0) + 1
        alive = draw(first, cycle, 2) >= config.restart
        for hop in range(1, config.max_hops):
            if not alive:
                break
            through.add(current)
            holders_here = graph.holders(current)
            user = int(holders_here[int(draw(first, cycle, 3 * hop + 3) * len(holders_here))])
            profile = graph.profile(user)
            current = int(profile[int(draw(first, cycle, 3 * hop + 4) * len(profile))])
            visits[current] = visits.get(current, 0) + 1
            alive = draw(first, cycle, 3 * hop + 5) >= config.restart
    visits.pop(item, None)
    top = sorted(visits.items(), key=lambda pair: (-pair[1], pair[0]))[: config.n_neighbours]
    return [i for i, _ in top], [float(c) for _, c in top], frozenset(through)


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_vectorised_walks_equal_a_walk_by_walk_reference(hops: int) -> None:
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    graph.add_user(np.array([0, 1, 2, 3]))  # injected holders come after training ones
    graph.add_user(np.array([int(np.argmin(graph.degree))]))
    config = WalkConfig(n_walks=8, max_hops=hops, restart=0.3, n_neighbours=4)
    items = np.arange(DATA.n_items)
    hoods = neighbourhoods_of(graph, config, items, chunk=7)  # several batches
    for item in items.tolist():
        neighbours, counts, through = reference_walks(graph, item, config)
        used = hoods.weight[item] > 0
        assert hoods.index[item][used].tolist() == neighbours, item
        assert hoods.weight[item][used].tolist() == counts, item
        assert hoods.through[item] == through, item


def test_walks_are_reproducible_and_exclude_the_item_itself() -> None:
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    config = WalkConfig(n_walks=32, max_hops=2, n_neighbours=6)
    item = int(np.argmax(graph.degree))
    first = walk_from(graph, item, config)
    second = walk_from(graph, item, config)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert item not in first[0].tolist()
    assert (np.diff(first[1]) <= 0).all()  # most visited first
    other_seed = walk_from(graph, item, WalkConfig(n_walks=32, max_hops=2, n_neighbours=6, seed=1))
    assert not np.array_equal(first[1], other_seed[1]) or not np.array_equal(
        first[0], other_seed[0]
    )


def test_graph_add_and_remove() -> None:
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    degree = graph.degree.copy()
    user = graph.add_user(np.array([3, 1, 2]))
    assert user == DATA.n_users and graph.profile(user).tolist() == [3, 1, 2]
    assert graph.holders(1)[-1] == user and graph.degree[1] == degree[1] + 1
    assert graph.remove_user(user).tolist() == [3, 1, 2]
    assert np.array_equal(graph.degree, degree) and user not in graph.holders(1)
    with pytest.raises(KeyError):
        graph.remove_user(0)  # a training user is not injected
    # profiles of training users are chronological
    first = DATA.train[DATA.train[:, 0] == 0]
    assert graph.profile(0).tolist() == first[np.argsort(first[:, 2], kind="stable"), 1].tolist()


def test_a_new_holder_changes_a_popular_items_walks_only_below_the_cutoff() -> None:
    graph = InteractionGraph(DATA.train, DATA.n_users, DATA.n_items)
    config = WalkConfig(n_walks=8, n_neighbours=5)
    item = int(np.argmax(graph.degree))
    assert graph.degree[item] > config.n_walks
    outcomes = set()
    for _ in range(40):
        neighbours, counts, _, cutoff = walk_from(graph, item, config)
        user = graph.add_user(np.array([item]))
        after = walk_from(graph, item, config)
        entered = holder_priority(config, item, int(user))[0] <= cutoff
        unchanged = np.array_equal(neighbours, after[0]) and np.array_equal(counts, after[1])
        if not entered:
            assert unchanged  # the walk starters, hence the walks, are the same
        outcomes.add(bool(entered))
    assert outcomes == {True, False}  # both cases happened


def test_forks_share_the_base_and_never_see_each_others_injections() -> None:
    clean = fresh_state(CONFIGS["two-hop-residual-no-degree"])
    clean_vectors, clean_scores = clean.item_vectors.dense(), clean.scores(np.arange(10))
    first, second = clean.fork(), clean.fork()
    assert first.item_vectors.base is clean.item_vectors.base  # shared, not copied
    target = int(np.argmin(clean.graph.degree))
    for i in range(5):
        first.add_user(np.array([target, i, i + 7]))
    second.add_user(np.array([1, 2, 3]))
    assert first.graph.injected_users == [DATA.n_users + i for i in range(5)]
    assert second.graph.injected_users == [DATA.n_users]
    assert np.array_equal(clean.item_vectors.dense(), clean_vectors)
    assert np.array_equal(clean.scores(np.arange(10)), clean_scores)
    assert not np.allclose(first.scores(np.arange(10)), second.scores(np.arange(10)))
    assert len(first.item_vectors.private_rows()) < DATA.n_items  # only changed rows copied
    for world in (first, second):
        assert_equal_to_full_recompute(world)
    # a fork of a fork carries its parent's injections and then goes its own way
    third = first.fork()
    third.remove_user(DATA.n_users)
    assert first.graph.injected_users[0] == DATA.n_users
    assert_equal_to_full_recompute(third)
    assert_equal_to_full_recompute(first)


def test_topk_is_the_head_of_a_full_sort_with_ties_by_item_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = fresh_state(CONFIGS["default"])
    for user in range(0, DATA.n_users, 7):
        scores = state.scores(np.array([user]))[0]
        scores = np.round(scores, 1)  # force ties

        def tied_scores(users: np.ndarray, tied: np.ndarray = scores) -> np.ndarray:
            return tied[None, :].copy()

        monkeypatch.setattr(state, "scores", tied_scores)
        held = set(state.graph.profile(user).tolist())
        ranked = [i for i in np.lexsort((np.arange(len(scores)), -scores)) if i not in held]
        for k in (1, 5, 20, DATA.n_items):
            assert state.topk(user, k).tolist() == ranked[:k]


def test_one_users_vector_is_bit_for_bit_its_row_of_the_batch() -> None:
    """/topk computes one user's vector on its own path; the answers stay those of the
    batch computation only if the floats are the same, not merely close."""
    state = fresh_state(CONFIGS["default"]).fork()
    rng = np.random.default_rng(0)
    for length in (1, 7, MAX_PROFILE):
        state.add_user(rng.choice(DATA.n_items, size=length, replace=False))
    users = np.array([*range(DATA.n_users), *state.graph.injected_users], dtype=np.int64)
    assert (state.graph.profile_length(users) == 0).any()  # the learned default too
    batch = state.user_vectors(users)
    for row, user in enumerate(users.tolist()):
        assert state.user_vectors(np.array([user])).tobytes() == batch[row].tobytes(), user


def overlay_as_written(
    written: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, RowOverlay, np.ndarray]:
    """A 40 x 4 base, an overlay on a copy of it with ``written`` rows written, and the
    dense table those writes should give."""
    base = rng.normal(size=(40, 4)).astype(np.float32)
    table, expected = RowOverlay(base.copy()), base.copy()
    rows = np.unique(np.asarray(written, dtype=np.int64))
    values = rng.normal(size=(len(rows), 4)).astype(np.float32)
    table[rows], expected[rows] = values, values
    return base, table, expected


@settings(max_examples=40, deadline=None)
@given(
    written=st.lists(st.integers(0, 39), max_size=40),
    n_vectors=st.sampled_from([1, BATCH - 1, BATCH, 3 * BATCH]),
    seed=st.integers(0, 2**16),
)
def test_overlay_products_equal_the_dense_table(
    written: list[int], n_vectors: int, seed: int
) -> None:
    """Both ways of ``dot_rows`` (patched columns for a few vectors, a dense copy for a
    batch) give the product with the table as written; the base never changes."""
    rng = np.random.default_rng(seed)
    base, table, expected = overlay_as_written(written, rng)
    vectors = rng.normal(size=(n_vectors, 4)).astype(np.float32)
    np.testing.assert_allclose(table.dot_rows(vectors), vectors @ expected.T, atol=1e-5)
    np.testing.assert_array_equal(table.base, base)


@settings(max_examples=40, deadline=None)
@given(
    written=st.lists(st.integers(0, 39), max_size=40),
    shape=st.sampled_from([(1,), (7,), (39,), (40,), (8, 5), (30, 6)]),
    seed=st.integers(0, 2**16),
)
def test_overlay_reads_equal_the_table_as_written(
    written: list[int], shape: tuple[int, ...], seed: int
) -> None:
    """Both ways of reading rows (the base patched where written, a dense copy for a
    gather as large as the table) give the table as written."""
    rng = np.random.default_rng(seed)
    base, table, expected = overlay_as_written(written, rng)
    wanted = rng.integers(0, 40, size=shape)
    np.testing.assert_array_equal(table[wanted], expected[wanted])
    np.testing.assert_array_equal(table.base, base)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.integers(0, 6), max_size=8), n=st.integers(0, 7))
@example(rows=[0, 1, 2, 3], n=4)
@example(rows=[0, 2, 1, 3], n=4)
@example(rows=[0, 0, 3, 3], n=4)
@example(rows=[], n=0)
def test_every_row_is_the_whole_range_and_nothing_else(rows: list[int], n: int) -> None:
    array = np.asarray(rows, dtype=np.int64)
    assert every_row(array, n) == np.array_equal(array, np.arange(n))


@settings(max_examples=40, deadline=None)
@given(
    written=st.lists(st.integers(0, 39), max_size=40),
    added=st.one_of(st.just(list(range(40))), st.lists(st.integers(0, 39), max_size=40)),
    forked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_overlay_add_equals_a_read_and_a_write(
    written: list[int], added: list[int], forked: bool, seed: int
) -> None:
    """``add`` in place (dense store, every row or some) or as a read and a write
    (compact store) gives the table as written plus the values; the base, and a fork's
    parent, never change; ``whole`` reads the table as written."""
    rng = np.random.default_rng(seed)
    base, table, expected = overlay_as_written(written, rng)
    parent, before = table, table.dense()
    if forked:
        table = table.fork()
    rows = np.unique(np.asarray(added, dtype=np.int64))
    values = rng.normal(size=(len(rows), 4)).astype(np.float32)
    table.add(rows, values)
    expected[rows] += values
    np.testing.assert_array_equal(table.whole(), expected)
    np.testing.assert_array_equal(table[np.arange(40)], expected)
    np.testing.assert_array_equal(table.base, base)
    if forked:
        np.testing.assert_array_equal(parent.whole(), before)
    with pytest.raises(ValueError, match="read-only"):
        table.whole()[0] = 0.0


def test_whole_table_reads_and_writes_equal_gathers_and_scatters() -> None:
    """Reading or writing every row (a slice copy) gives what a gather or scatter of the
    same rows would, and marks them all written."""
    rng = np.random.default_rng(0)
    base, table, expected = overlay_as_written(list(range(0, 40, 2)), rng)  # dense now
    every, shuffled = np.arange(40), rng.permutation(40)
    np.testing.assert_array_equal(table[every], expected)
    values = rng.normal(size=(40, 4)).astype(np.float32)
    table[every] = values
    np.testing.assert_array_equal(table[shuffled], values[shuffled])
    np.testing.assert_array_equal(table.private_rows(), every)
    np.testing.assert_array_equal(table.base, base)


def live_users(state: EmbeddingState) -> np.ndarray:
    return np.array([*range(DATA.n_users), *state.graph.injected_users], dtype=np.int64)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=operations, parent=operations, child=operations, grandchild=operations)
def test_lazy_forks_score_as_eager_copies(before, parent, child, grandchild) -> None:
    """A fork shares its parent's tables until one of them writes. Injections and removals
    on a parent (also after it was forked), its fork and the fork's fork give each state
    the same scores, bit for bit, as the same operations on eager copies (deep copies at
    each fork): no write ever reaches another state."""
    forks: dict[str, Callable[[EmbeddingState], EmbeddingState]] = {
        "lazy": EmbeddingState.fork,
        "eager": copy.deepcopy,
    }
    states = {}
    for name, fork in forks.items():
        root = fresh_state(CONFIGS["default"])
        replay(root, before)
        first = fork(root)
        replay(root, parent)
        replay(first, child)
        second = fork(first)
        replay(second, grandchild)
        states[name] = (root, first, second)
    for mine, theirs in zip(states["lazy"], states["eager"], strict=True):
        assert mine.graph.injected_users == theirs.graph.injected_users
        users = live_users(mine)
        assert np.array_equal(mine.scores(users), theirs.scores(users))


def test_a_fork_copies_nothing_and_a_write_copies_only_its_own_table() -> None:
    """Forking a table with many written rows allocates nothing of them; the first write
    to the fork copies that table alone (its sibling tables stay shared with the
    parent), and the parent never sees it."""
    rng = np.random.default_rng(0)
    tables = [RowOverlay(rng.normal(size=(2_000, 16)).astype(np.float32)) for _ in range(2)]
    for table, n_rows in zip(tables, (1_500, 100), strict=True):  # a dense and a compact one
        table[np.arange(n_rows)] = 1.0
    before = [table.dense() for table in tables]
    tracemalloc.start()
    try:
        forks = [table.fork() for table in tables]
        forked = tracemalloc.get_traced_memory()[1]  # peak bytes allocated by the forks
    finally:
        tracemalloc.stop()
    assert forked < 10_000  # against 1,600 written rows of 64 bytes
    forks[1][np.array([7])] = 2.0
    assert forks[0]._store is tables[0]._store  # untouched: still shared
    assert forks[1]._store is not tables[1]._store
    assert forks[1][np.array([7])][0, 0] == 2.0
    for table, expected in zip(tables, before, strict=True):
        assert np.array_equal(table.dense(), expected)
