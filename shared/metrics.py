"""Ranking metrics: HR@K and NDCG@K under the two protocols every number is reported in.

- ``sampled``: the paper's protocol, the held-out item ranked among 100 items the user
  never interacted with (drawn with a fixed seed, so two evaluations are paired);
- ``full``: the held-out item ranked among every item the user has not interacted with.

A case is one (user, held-out item) pair. Ties count half (the expected rank under a
random tie-break), so a model that scores everything equal gets chance, not a perfect
or a zero score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from shared.schemas import KS, PROTOCOLS, hit_rate_at, ndcg_at

ACTIVE_MIN_TRAIN = 3  # the paper's second cohort: users with 3+ training interactions
N_SAMPLED = 100
ScoreFn = Callable[[np.ndarray], np.ndarray]  # user ids -> (len, n_items) scores
# (user ids, (len, m) item ids) -> (len, m) scores of each user's own items
PairScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
_CHUNK = 512


def known_items(rows: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """User x item 0/1 matrix of the (user, item, ...) rows."""
    data = np.ones(len(rows), dtype=np.float32)
    known = sp.csr_matrix((data, (rows[:, 0], rows[:, 1])), shape=(n_users, n_items))
    known.sum_duplicates()
    known.data[:] = 1
    return known


def sample_negatives(
    users: np.ndarray, known: sp.csr_matrix, n_samples: int, seed: int
) -> np.ndarray:
    """(len(users), n_samples) items each user never interacted with, uniformly drawn."""
    rng = np.random.default_rng(seed)
    n_items = known.shape[1]
    samples = rng.integers(0, n_items, size=(len(users), n_samples))
    for _ in range(100):
        clash = np.asarray(known[np.repeat(users, n_samples), samples.ravel()]).reshape(
            samples.shape
        )
        if not clash.any():
            return samples
        samples[clash > 0] = rng.integers(0, n_items, size=int((clash > 0).sum()))
    raise ValueError("could not sample negatives: some user has interacted with almost all items")


def ranks_of(
    score: ScoreFn,
    users: np.ndarray,
    items: np.ndarray,
    known: sp.csr_matrix,
    *,
    seed: int = 0,
    protocols: tuple[str, ...] = PROTOCOLS,
    negatives: np.ndarray | None = None,
    pair_score: PairScoreFn | None = None,
) -> dict[str, np.ndarray]:
    """0-based rank of ``items[c]`` for ``users[c]`` under each protocol (ties count half),
    from one pass over the scores.

    Under ``full``, items in ``known`` for the user (other than the held-out one) are
    excluded; under ``sampled``, the 100 negatives come from outside ``known`` and depend
    only on (users, seed), so two evaluations of the same cases are paired (a caller that
    evaluates the same cases again may pass them as ``negatives``).

    With ``pair_score``, the sampled protocol scores only each case's 101 candidates
    (the full product is then computed only for ``full``): an evaluation of the sampled
    protocol alone costs a fraction of one over the whole catalogue.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if negatives is None and "sampled" in protocols:
        negatives = sample_negatives(users, known, N_SAMPLED, seed)
    ranks = {protocol: np.empty(len(users), dtype=np.float64) for protocol in protocols}
    sampled_by_pairs = "sampled" in protocols and pair_score is not None
    whole_catalogue = "full" in protocols or not sampled_by_pairs
    for start in range(0, len(users), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        case_users, case_items = users[chunk], items[chunk]
        if sampled_by_pairs:
            assert negatives is not None and pair_score is not None
            candidates = np.concatenate([case_items[:, None], negatives[chunk]], axis=1)
            paired = np.asarray(pair_score(case_users, candidates))
            ranks["sampled"][chunk] = _rank(paired[:, 1:], paired[:, :1])
        if not whole_catalogue:
            continue
        unique_users, inverse = np.unique(case_users, return_inverse=True)
        scores = np.asarray(score(unique_users))
        if len(unique_users) < len(case_users) or (inverse != np.arange(len(inverse))).any():
            scores = scores[inverse]
        cases = np.arange(len(case_items))
        positive = scores[cases, case_items][:, None]
        if "sampled" in protocols and not sampled_by_pairs:
            assert negatives is not None
            candidates = np.take_along_axis(scores, negatives[chunk], axis=1)
            ranks["sampled"][chunk] = _rank(candidates, positive)
        if "full" in protocols:
            ranks["full"][chunk] = _full_rank(scores, positive, known[case_users], case_items)
    return ranks


def _rank(candidates: np.ndarray, positive: np.ndarray) -> np.ndarray:
    return (candidates > positive).sum(axis=1) + (candidates == positive).sum(axis=1) / 2


def _full_rank(
    scores: np.ndarray, positive: np.ndarray, known: sp.csr_matrix, held_out: np.ndarray
) -> np.ndarray:
    """Rank among every item but the held-out one and the user's other known items: all
    items, less the held-out item's tie with itself, less the known items (sparse)."""
    greater = (scores > positive).sum(axis=1).astype(np.float64)
    ties = (scores == positive).sum(axis=1) - 1.0
    rows = np.repeat(np.arange(len(scores)), np.diff(known.indptr))
    columns = known.indices
    other = columns != held_out[rows]
    rows, columns = rows[other], columns[other]
    values, pivot = scores[rows, columns], positive[rows, 0]
    greater -= np.bincount(rows, weights=values > pivot, minlength=len(scores))
    ties -= np.bincount(rows, weights=values == pivot, minlength=len(scores))
    return greater + ties / 2


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K = share of cases ranked in the top K; NDCG@K = mean of 1/log2(rank + 2) there."""
    if len(ranks) == 0:
        raise ValueError("no cases to evaluate")
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[hit_rate_at(k)] = float(hit.mean())
        out[ndcg_at(k)] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
    return out


def evaluate(
    score: ScoreFn,
    cases: np.ndarray,
    known: sp.csr_matrix,
    *,
    seed: int = 0,
    ks: tuple[int, ...] = KS,
) -> dict[str, dict[str, float]]:
    """Both protocols for the (user, item, ...) rows in ``cases``."""
    ranks = ranks_of(score, cases[:, 0], cases[:, 1], known, seed=seed)
    return {protocol: metrics_from_ranks(r, ks) for protocol, r in ranks.items()}
