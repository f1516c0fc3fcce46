"""The target side of a scenario, as the recommenders train and evaluate on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from recsys_server.features import content_features
from shared.metrics import ScoreFn, evaluate, known_items, metrics_from_ranks, ranks_of
from shared.scenario import Scenario


@dataclass
class TargetData:
    train: np.ndarray  # (n, 3) user, item, timestamp
    valid: np.ndarray
    test: np.ndarray
    n_users: int
    n_items: int
    content: np.ndarray  # (n_items, n_features)
    fingerprint: str = ""
    # users the service hands to attackers as their established accounts, and the
    # (disjoint) users attacks are evaluated on
    pretend_pool: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    eval_users: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    ARRAYS = ("train", "valid", "test", "content", "pretend_pool", "eval_users")

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> TargetData:
        return cls(
            train=scenario.train,
            valid=scenario.valid,
            test=scenario.test,
            n_users=scenario.n_users,
            n_items=scenario.n_items,
            content=content_features(scenario.catalogue)[0],
            fingerprint=scenario.fingerprint,
            pretend_pool=scenario.pretend_pool,
            eval_users=scenario.eval_users,
        )

    @cached_property
    def known(self) -> sp.csr_matrix:
        """Every interaction of every split: what 'never interacted with' excludes."""
        rows = np.concatenate([self.train, self.valid, self.test])
        return known_items(rows, self.n_users, self.n_items)

    def train_matrix(self) -> sp.csr_matrix:
        return known_items(self.train, self.n_users, self.n_items)

    def validation_hr10(self, score: ScoreFn, seed: int = 0) -> float:
        """Early-stopping signal: HR@10 on the validation split, sampled protocol."""
        ranks = ranks_of(score, self.valid[:, 0], self.valid[:, 1], self.known, seed=seed,
                         protocols=("sampled",))  # fmt: skip
        return metrics_from_ranks(ranks["sampled"], (10,))["HR@10"]

    def test_metrics(self, score: ScoreFn, seed: int = 0) -> dict[str, dict[str, float]]:
        return evaluate(score, self.test, self.known, seed=seed)

    def validation_metrics(self, score: ScoreFn, seed: int = 0) -> dict[str, dict[str, float]]:
        return evaluate(score, self.valid, self.known, seed=seed)
