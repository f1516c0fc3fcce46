"""Evaluation: HR@K / NDCG@K of target items over the evaluation users, the clean model
against a world, on the same sampled negatives. The clean model's metrics and each
target's evaluation users and negatives are computed once and kept (every world's
evaluation of a target uses the same)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from recsys_server.data import TargetData
from recsys_server.domain_errors import NoEvaluationUsers
from recsys_server.victims.base import ServingState
from recsys_server.worlds.world import World, check_items, run_on
from shared.metrics import (
    ACTIVE_MIN_TRAIN,
    KS,
    N_SAMPLED,
    metrics_from_ranks,
    ranks_of,
    sample_negatives,
)
from shared.schemas import (
    COHORTS,
    PROTOCOLS,
    CohortEvaluation,
    EvaluationReport,
    Metrics,
    TargetEvaluation,
)


@dataclass(frozen=True)
class EvaluationCases:
    users: np.ndarray  # evaluation users who never had the target
    negatives: np.ndarray  # (len(users), N_SAMPLED) sampled items of each
    active: np.ndarray  # users with 3+ training interactions (the second cohort)


class Evaluation:
    def __init__(self, clean: ServingState, data: TargetData, seed: int) -> None:
        self.clean = clean
        self.data = data
        self.seed = seed
        self._holders = data.known.tocsc()
        self._train_counts = np.bincount(data.train[:, 0], minlength=data.n_users)
        self._clean_metrics: dict[int, dict[str, tuple[int, dict[str, Metrics]]]] = {}
        self._cases: dict[int, EvaluationCases] = {}
        # evaluations run on a thread of their own: neither the event loop nor the
        # injections' refresh waits for one
        self._evaluator = ThreadPoolExecutor(1, thread_name_prefix="evaluate")

    def close(self) -> None:
        self._evaluator.shutdown(wait=True)

    async def evaluate(
        self, world: World, targets: list[int], protocols: tuple[str, ...] = PROTOCOLS
    ) -> EvaluationReport:
        """HR@K / NDCG@K of each target over the evaluation users (all, and those with 3+
        training interactions), clean model and world, under ``protocols``, on the same
        sampled negatives."""
        check_items(targets, self.data.n_items, "target_items")
        # the installed state never changes: evaluate it without holding up the world
        evaluated = await run_on(
            self._evaluator, self._evaluate_sync, world.state, targets, protocols
        )
        mean = {
            cohort: CohortEvaluation(
                n_users=round(float(np.mean([t.cohorts[cohort].n_users for t in evaluated]))),
                before=_mean([t.cohorts[cohort].before for t in evaluated]),
                after=_mean([t.cohorts[cohort].after for t in evaluated]),
            )
            for cohort in COHORTS
        }
        return EvaluationReport(
            world_id=world.world_id, seed=self.seed, targets=evaluated, mean=mean
        )

    def _evaluate_sync(
        self, state: ServingState, targets: list[int], protocols: tuple[str, ...]
    ) -> list[TargetEvaluation]:
        out = []
        for target in targets:
            if target not in self._clean_metrics:
                self._clean_metrics[target] = self._rank_metrics(self.clean, target, PROTOCOLS)
            before = self._clean_metrics[target]
            after = self._rank_metrics(state, target, protocols)
            cohorts = {
                cohort: CohortEvaluation(
                    n_users=before[cohort][0],
                    before={p: m for p, m in before[cohort][1].items() if p in protocols},
                    after=after[cohort][1],
                )
                for cohort in COHORTS
            }
            out.append(TargetEvaluation(item=target, cohorts=cohorts))
        return out

    def _cases_of(self, target: int) -> EvaluationCases:
        """The evaluation users who never had ``target`` and their sampled negatives, drawn
        once per target (every world's evaluation of it uses the same)."""
        if target not in self._cases:
            holders = self._holders[:, target].nonzero()[0]
            users = np.setdiff1d(self.data.eval_users, holders)
            if len(users) == 0:
                raise NoEvaluationUsers(f"target_items: every evaluation user holds item {target}")
            negatives = sample_negatives(users, self.data.known, N_SAMPLED, self.seed)
            active = self._train_counts[users] >= ACTIVE_MIN_TRAIN
            self._cases[target] = EvaluationCases(users, negatives, active)
        return self._cases[target]

    def _rank_metrics(
        self, state: ServingState, target: int, protocols: tuple[str, ...]
    ) -> dict[str, tuple[int, dict[str, Metrics]]]:
        """Per cohort: its users who never had ``target``, and their metrics."""
        cases = self._cases_of(target)
        ranks = ranks_of(
            state.scores,
            cases.users,
            np.full(len(cases.users), target),
            self.data.known,
            protocols=protocols,
            negatives=cases.negatives,
            pair_score=state.scores_of,
        )
        out: dict[str, tuple[int, dict[str, Metrics]]] = {}
        for cohort, keep in (("all", np.ones(len(cases.users), dtype=bool)), ("3+", cases.active)):
            if not keep.any():  # no such user: no metrics, n_users says why
                out[cohort] = (0, {})
                continue
            out[cohort] = (
                int(keep.sum()),
                {p: metrics_from_ranks(r[keep], KS) for p, r in ranks.items()},
            )
        return out


def _mean(reports: list[dict[str, Metrics]]) -> dict[str, Metrics]:
    """Protocol -> metric means over the reports that have any (a cohort can be empty)."""
    reports = [report for report in reports if report]
    if not reports:
        return {}
    return {
        protocol: {
            name: float(np.mean([r[protocol][name] for r in reports]))
            for name in reports[0][protocol]
        }
        for protocol in reports[0]
    }
