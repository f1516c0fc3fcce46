"""The statistics of a Table 2 run: each method's means over its cells with 95% Student t
intervals, and paired tests of each learner against the best method that is not one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from attacker_client.methods import LEARNERS
from attacker_client.results import (
    CURVE_METRICS,
    HEADLINE,
    CellResult,
    Interval,
    Measured,
    MethodSummary,
    MetricKey,
    PairedTest,
    Summary,
    recorded_config,
    sampled,
)
from shared.schemas import ALL_USERS, HR_20, NDCG_20, Metrics

if TYPE_CHECKING:
    from attacker_client.harness import ExperimentConfig

# the metrics of the paired tests: the paper's headline and NDCG, and the full ranking,
# where the methods can order differently
PAIRED_METRICS = (HEADLINE, sampled(NDCG_20), MetricKey(ALL_USERS, "full", HR_20))
# budgets below the full one where the learners are also tested on sampled HR@20 (a
# learner may lead early and lose the lead, or the reverse), when the run checks them
PAIRED_BUDGETS = (10,)


def mean_and_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return float(array.mean()), 0.0
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return float(array.mean()), float(half)


def summarise(cells: list[CellResult], config: ExperimentConfig) -> Summary:
    by_method: dict[str, list[CellResult]] = {}
    for cell in cells:
        by_method.setdefault(cell.method, []).append(cell)
    rows = {}
    for method, group in by_method.items():
        metrics: dict[str, Interval] = {}
        for cohort, protocols in group[0].after.items():
            for protocol, values in protocols.items():
                for name in values:
                    metric = MetricKey(cohort, protocol, name)
                    mean, half = mean_and_interval([metric.of(c.after) for c in group])
                    metrics[metric.key] = Interval(mean=mean, ci95=half)
        curve: dict[int, Metrics] = {}
        curve_ci95: dict[int, Metrics] = {}
        for budget in config.checkpoints():
            points = [c.checkpoints.get(budget) for c in group]
            if all(p is not None for p in points):
                intervals = {
                    name: mean_and_interval([sampled(name).of(p) for p in points if p is not None])
                    for name in CURVE_METRICS
                }
                curve[budget] = {name: mean for name, (mean, _) in intervals.items()}
                curve_ci95[budget] = {name: half for name, (_, half) in intervals.items()}
        rows[method] = MethodSummary(
            cells=len(group),
            targets=len({c.target for c in group}),
            metrics=metrics,
            items_per_profile=float(np.mean([c.items_per_profile for c in group])),
            queries=float(np.mean([c.queries for c in group])),
            injections=float(np.mean([c.injections for c in group])),
            seconds=float(np.mean([c.seconds for c in group])),
            reward_density=_reward_density(group),
            amortised_queries=_policy_cost_per_target(group, "training_queries"),
            amortised_injections=_policy_cost_per_target(group, "training_injections"),
            budget_curve=curve,
            # left unset without a curve: such a summary is laid out as before
            **({"budget_curve_ci95": curve_ci95} if curve_ci95 else {}),
        )
    early = [b for b in PAIRED_BUDGETS if b in config.checkpoints() and b < config.budget]
    tests = [
        paired_test(by_method, metric, learner, budget)
        for learner in LEARNERS
        for metric, budget in [
            *((m, None) for m in PAIRED_METRICS),
            *((PAIRED_METRICS[0], b) for b in early),
        ]
    ]
    return Summary(
        methods=rows,
        paired_tests=[test for test in tests if test is not None],
        config=recorded_config(config),
    )


def _policy_cost_per_target(group: list[CellResult], key: str) -> float:
    """The policy's whole training cost over the number of targets in the table: computed
    here, not taken from the cells, which recorded the share of the run that made them (a
    resumed run with more or fewer targets would mix shares)."""
    cost = float(np.mean([c.info.get("policy", {}).get(key, 0.0) for c in group]))
    return cost / len({c.target for c in group})


def _reward_density(group: list[CellResult]) -> float | None:
    """Over the cells that asked anything (cells recorded before a spend that asked
    nothing stopped reporting a density of 0 still hold one)."""
    asked = [c for c in group if c.info.get("reward_rounds", 1) > 0]
    values = [c.info["reward_density"] for c in asked if "reward_density" in c.info]
    return float(np.mean(values)) if values else None


def paired_test(
    by_method: dict[str, list[CellResult]],
    metric: MetricKey,
    learner: str = "CopyAttack",
    budget: int | None = None,
) -> PairedTest | None:
    """``learner`` against the best method that is not one of the learners on ``metric``,
    paired by (target, seed): Wilcoxon signed-rank and paired t; and its gain over
    WithoutAttack as a multiple of that method's gain. With ``budget``, at that checkpoint
    of the budget curve (sampled protocol only), not after the spend."""
    others = [m for m in by_method if m not in LEARNERS]
    if learner not in by_method or not others:
        return None

    def series(method: str) -> dict[tuple[int, int], float]:
        measured: list[tuple[CellResult, Measured | None]]
        if budget is None:
            measured = [(c, c.after) for c in by_method[method]]
        else:  # a WithoutAttack cell injects nothing: every checkpoint is its clean state
            measured = [
                (c, c.after if c.profiles == 0 else c.checkpoints.get(budget))
                for c in by_method[method]
            ]
        return {(c.target, c.seed): metric.of(after) for c, after in measured if after is not None}

    ours = series(learner)
    other = {m: values for m in others if (values := series(m))}
    if not ours or not other:
        return None
    best = max(other, key=lambda m: np.mean(list(other[m].values())))
    keys = sorted(ours.keys() & other[best].keys())
    a = np.array([ours[k] for k in keys])
    b = np.array([other[best][k] for k in keys])
    differences = a - b
    # the optional fields are set only when computed: the file leaves the others out
    optional: dict[str, float | None] = {}
    clean_known = "WithoutAttack" in other and set(keys) <= other["WithoutAttack"].keys()
    if clean_known and best != "WithoutAttack":
        clean = np.array([other["WithoutAttack"][k] for k in keys])
        gain = float((b - clean).mean())
        optional["gain_ratio"] = float((a - clean).mean()) / gain if gain > 0 else None
    if len(keys) >= 2 and differences.any():
        optional["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
        optional["paired_t_p"] = float(stats.ttest_rel(a, b).pvalue)
    return PairedTest(
        learner=learner,
        metric=metric.key,
        budget=budget,
        best_other=best,
        pairs=len(keys),
        mean_difference=float(differences.mean()),
        copyattack_wins=int((differences > 0).sum()),
        ties=int((differences == 0).sum()),
        **optional,
    )
