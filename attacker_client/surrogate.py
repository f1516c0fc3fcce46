"""The attacker's own recommender, built before any query: item-to-item cosine over
co-occurrence in the source profiles it holds (restricted to the shared catalogue).

A policy can be trained against it offline, with zero queries to the target: a
``SurrogateWorld`` takes injections and answers its pretend users' top-k as a world on
the server does. Its pretend users are source users (the attacker's only users), drawn
once by seed; for a target, the ones holding it are left out, as the server's pretend
users never hold a cold target.

score(u, i) = sum over j in u of C[i, j] / sqrt(n_i n_j), C the co-occurrence counts and
n_i = C[i, i] the profiles holding i; an injected profile adds to both, so it moves
every list that holds one of its items, as an injection into a neighbourhood model does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from shared.scenario import AttackerView


@dataclass(frozen=True)
class SurrogateConfig:
    pretend_users: int = 50  # asked per target (the server's default world)
    spare_pretend_users: int = 30  # drawn beyond that, to replace holders of a target
    min_profile: int = 3  # a pretend user holds at least this many items (as on the server)
    seed: int = 0


class CooccurrenceSurrogate:
    """The clean surrogate: counts over every source profile, for a fixed set of pretend
    users. ``world(target)`` opens an empty attack on it."""

    def __init__(self, view: AttackerView, config: SurrogateConfig = SurrogateConfig()) -> None:
        self.view, self.config = view, config
        rng = np.random.default_rng(config.seed)
        lengths = np.diff(view.source_indptr)
        rows = np.repeat(np.arange(view.n_source_users), lengths)
        matrix = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, view.source_items)),
            shape=(view.n_source_users, view.n_items),
        )
        matrix.data[:] = 1.0  # a profile holds an item once
        eligible = np.flatnonzero(lengths >= config.min_profile)
        count = min(len(eligible), config.pretend_users + config.spare_pretend_users)
        self.pretend = np.sort(rng.choice(eligible, count, replace=False))
        self.pretend_items = matrix[self.pretend]  # (pretend users, items), 0/1
        # the columns a pretend user's score reads: the items some pretend user holds
        self.columns = np.unique(self.pretend_items.indices)
        self.cooccurrence = (matrix[:, self.columns].T @ matrix).toarray()  # (columns, items)
        self.holders = np.asarray(matrix.sum(axis=0)).ravel()  # n_i
        self.row_of = np.full(view.n_items, -1)  # item -> its row of ``cooccurrence``
        self.row_of[self.columns] = np.arange(len(self.columns))

    def world(self, target: int) -> SurrogateWorld:
        return SurrogateWorld(self, target)


class SurrogateWorld:
    """One attack on the surrogate: injections, and the pretend users' top-k."""

    def __init__(self, surrogate: CooccurrenceSurrogate, target: int) -> None:
        self.surrogate, self.target = surrogate, target
        config = surrogate.config
        holds = np.asarray(surrogate.pretend_items[:, target].todense()).ravel() > 0
        self.users = np.flatnonzero(~holds)[: config.pretend_users]  # rows of pretend_items
        known = surrogate.pretend_items[self.users]
        self.known = known.nonzero()  # (user, item) pairs never recommended
        self.held = known[:, surrogate.columns].toarray()  # (users, columns), 0/1
        self.holders = surrogate.holders.copy()  # n_i with the injections
        self.injected: list[np.ndarray] = []
        self.queries = 0

    def inject(self, profile: np.ndarray) -> None:
        profile = np.unique(np.asarray(profile, dtype=np.int64))
        self.injected.append(profile)
        self.holders[profile] += 1

    def topk(self, k: int) -> list[list[int]]:
        """Each pretend user's top-k of the items it does not hold, with the injections."""
        s = self.surrogate
        weights = self.held / np.sqrt(np.maximum(self.holders[s.columns], 1))
        scores = weights @ s.cooccurrence  # (users, items), the clean counts
        for profile in self.injected:
            # the profile's pairs add 1 to C[j, i] for j, i both in it
            rows = s.row_of[profile]
            inside = rows >= 0
            if inside.any():
                scores[:, profile] += weights[:, rows[inside]].sum(axis=1, keepdims=True)
        scores /= np.sqrt(np.maximum(self.holders, 1))
        scores[self.known] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        ordered = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
        self.queries += len(self.users)
        return ordered.tolist()
