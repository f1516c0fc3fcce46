from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.metrics import (
    evaluate,
    known_items,
    metrics_from_ranks,
    ranks_of,
    sample_negatives,
)


def test_hr_and_ndcg_from_ranks() -> None:
    ranks = np.array([0.0, 4.0, 9.0, 30.0])
    metrics = metrics_from_ranks(ranks, (5, 10))
    assert metrics["HR@5"] == 0.5 and metrics["HR@10"] == 0.75
    expected = (1 / np.log2(2) + 1 / np.log2(6) + 1 / np.log2(11)) / 4
    assert metrics["NDCG@10"] == pytest.approx(expected)
    with pytest.raises(ValueError):
        metrics_from_ranks(np.array([]))


def test_full_ranking_excludes_known_items_and_counts_ties_half() -> None:
    n_items = 6
    known = known_items(np.array([[0, 1, 0], [0, 2, 0]]), 1, n_items)
    scores = np.array([[5.0, 9.0, 8.0, 5.0, 5.0, 1.0]])
    rank = ranks_of(lambda u: scores[u], np.array([0]), np.array([2]), known)["full"]
    assert rank[0] == 0  # item 1 scores higher but is known
    rank = ranks_of(lambda u: scores[u], np.array([0]), np.array([0]), known)["full"]
    assert rank[0] == 1.0  # items 3 and 4 tie with it: half each


def test_constant_scores_give_chance_not_a_perfect_score() -> None:
    known = known_items(np.array([[u, u, 0] for u in range(50)]), 50, 500)
    score = lambda users: np.zeros((len(users), 500))  # noqa: E731
    ranks = ranks_of(score, np.arange(50), np.arange(50), known, seed=0)
    assert (ranks["sampled"] == 50).all()
    assert (ranks["full"] == (500 - 1) / 2).all()


def test_negatives_are_unknown_items_and_seeded() -> None:
    rows = np.array([[0, i, 0] for i in range(0, 40)])
    known = known_items(rows, 1, 50)
    users = np.zeros(20, dtype=np.int64)
    first = sample_negatives(users, known, 100, seed=3)
    assert first.min() >= 40
    assert np.array_equal(first, sample_negatives(users, known, 100, seed=3))
    assert not np.array_equal(first, sample_negatives(users, known, 100, seed=4))


def test_evaluate_reports_both_protocols() -> None:
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(0, 30, 200), rng.integers(0, 300, 200), np.zeros(200)], 1)
    known = known_items(rows.astype(np.int64), 30, 300)
    oracle = np.zeros((30, 300))
    oracle[rows[:, 0].astype(int), rows[:, 1].astype(int)] = 1.0
    result = evaluate(lambda u: oracle[u], rows[:40].astype(np.int64), known, seed=1)
    assert set(result) == {"sampled", "full"}
    assert result["sampled"]["HR@5"] == 1.0  # positives beat every unknown item
    assert 0 < result["full"]["HR@20"] <= 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_users=st.integers(1, 30), n_items=st.integers(2, 40))
def test_full_rank_equals_a_brute_force_count(seed: int, n_users: int, n_items: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(n_users, n_items)).astype(np.float32)  # many ties
    known = sp.csr_matrix(rng.random((n_users, n_items)) < 0.3, dtype=np.float32)
    users = rng.integers(0, n_users, size=25)
    items = rng.integers(0, n_items, size=25)
    ranks = ranks_of(lambda u: scores[u], users, items, known, protocols=("full",))["full"]
    for case, (user, item) in enumerate(zip(users, items, strict=True)):
        others = [j for j in range(n_items) if j != item and known[user, j] == 0]
        above = sum(scores[user, j] > scores[user, item] for j in others)
        tied = sum(scores[user, j] == scores[user, item] for j in others)
        assert ranks[case] == above + tied / 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), protocols=st.sampled_from([("sampled",), ("sampled", "full")]))
def test_sampled_ranks_from_candidate_scores_equal_those_from_the_catalogue(
    seed: int, protocols: tuple[str, ...]
) -> None:
    """Scoring only each case's candidates (``pair_score``) gives the same ranks as
    scoring the whole catalogue, ties included, and the full protocol is untouched."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 12, 150
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float32)  # many ties
    known = sp.csr_matrix(rng.random((n_users, n_items)) < 0.2, dtype=np.float32)
    users = rng.integers(0, n_users, size=40)
    items = rng.integers(0, n_items, size=40)
    expected = ranks_of(lambda u: scores[u], users, items, known, seed=seed)
    asked: list[int] = []

    def catalogue(u: np.ndarray) -> np.ndarray:
        asked.append(len(u))
        return scores[u]

    ranks = ranks_of(
        catalogue,
        users,
        items,
        known,
        seed=seed,
        protocols=protocols,
        pair_score=lambda u, candidates: np.take_along_axis(scores[u], candidates, axis=1),
    )
    for protocol in protocols:
        np.testing.assert_array_equal(ranks[protocol], expected[protocol])
    assert bool(asked) == ("full" in protocols)  # the catalogue only when full is asked
