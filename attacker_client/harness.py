"""The experiment harness: the paper's Table 2 and budget curve, over HTTP.

Every (method, target item, seed) is a cell run in its own world, several at once. A
cell's final spend is evaluated by the server's admin evaluation at each checkpoint
budget (5, 10, ..., budget: the budget curve of Fig. 5, from the same runs) and at the
end. Finished cells are appended to ``cells.jsonl`` as they end, so an interrupted run
resumes without redoing them. The tables are the mean and 95% interval over target
items and seeds, with paired tests of each learner (CopyAttack, and the methods that spend
a pretrained policy) against the best method that is not one of them (sampled HR@20 and
NDCG@20, full HR@20).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import functools
import io
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from scipy import stats
from tqdm import tqdm

from attacker_client._client import AsyncAdminClient, AsyncClient
from attacker_client.attack import AttackContext, AttackMethod, require_scenario_of
from attacker_client.attack_baselines import random_attack, target_attack, without_attack
from attacker_client.copyattack import CopyAttackArgs, copyattack
from attacker_client.generated import GENERATED, generated_method, target_platform_stats
from attacker_client.pretrain import PretrainedPolicy, copyattack_pretrained, load_policy
from attacker_client.readiness import READY_TIMEOUT, wait_until_ready
from attacker_client.source_mf import SourceEmbeddings, SourceMFConfig, cached_source_mf
from attacker_client.tree import BalancedClusterTree
from shared.atomic import staged_file, write_text_atomic
from shared.datasets.registry import sha256_file
from shared.errors import CopyAttackError
from shared.fake_profiles import PlatformStats
from shared.machine import machine
from shared.options import option, seconds
from shared.scenario import AttackerView, draw_targets, load_attacker_view
from shared.schemas import PROTOCOLS, Defence, DetectorName, EvaluationReport, ModelInfo

METHODS = (
    "WithoutAttack",
    "RandomAttack",
    "TargetAttack40",
    "TargetAttack70",
    "TargetAttack100",
    "PolicyNetwork",
    "CopyAttack-Masking",
    "CopyAttack-Length",
    "CopyAttack",
)
# CopyAttack with a policy trained before the attack (attacker_client/pretrain.py): across
# training targets on the server ("Amortised") or on the attacker's surrogate; as it is,
# or fine-tuned per target ("+FT", the configured episodes)
PRETRAINED = {
    "CopyAttack-Amortised": ("amortised", False),
    "CopyAttack-Amortised+FT": ("amortised", True),
    "CopyAttack-Surrogate": ("surrogate", False),
    "CopyAttack-Surrogate+FT": ("surrogate", True),
}
ALL_METHODS = (*METHODS, *PRETRAINED, *GENERATED)
# the learners judged against the best of the other methods in the paired tests
LEARNERS = ("CopyAttack", *PRETRAINED)
# (cohort, protocol, metric) of the paired tests: the paper's headline and NDCG, and the
# full ranking, where the methods can order differently
PAIRED_METRICS = (
    ("all", "sampled", "HR@20"),
    ("all", "sampled", "NDCG@20"),
    ("all", "full", "HR@20"),
)
# budgets below the full one where the learners are also tested on sampled HR@20 (a
# learner may lead early and lose the lead, or the reverse), when the run checks them
PAIRED_BUDGETS = (10,)


@dataclass(frozen=True)
class ExperimentConfig:
    server: str = option(help="base URL of the recommender service")
    admin_token: str = option(help="bearer token of the /admin routes")
    scenario: Path = option(help="the scenario folder")
    out: Path = option(help="results (resumed)")
    methods: tuple[str, ...] = option(
        METHODS, f"of: {', '.join(ALL_METHODS)}", choices=ALL_METHODS, metavar="METHOD"
    )
    targets: int = option(50, "cold target items, in the scenario's order")
    decile: int | None = option(None, "instead: the targets of this popularity decile (Fig. 4)")
    seeds: tuple[int, ...] = option((0,), "world seeds")
    budget: int = option(30, "profiles per attack (the paper)")
    pretend_users: int = option(50, "per world")
    concurrency: int = option(4, "worlds at once")
    checkpoint_every: int = option(
        5, "evaluate the budget curve every this many profiles (the budget: only at the end)"
    )
    # "frozen": the paper's fixed model; "retrain": a scheduled fine-tune on the polluted
    # graph after the attack, evaluated after the retrain (no budget curve: one retrain
    # per cell). The retrain is a job on the server, started and polled until it
    # succeeded; a cell stopped meanwhile deletes its world, which cancels the job.
    threat_model: Literal["frozen", "retrain"] = option(
        "frozen", "retrain: fine-tune the model on the polluted graph before evaluating"
    )
    retrain_epochs: int = option(3, "epochs of that fine-tune (--threat-model retrain)")
    attack: CopyAttackArgs = field(default_factory=CopyAttackArgs)
    cache_dir: Path | None = option(
        None, "where the source MF is kept between runs (default: --out)"
    )
    # the saved policies of the pretrained methods (copyattack experiment pretrain)
    policies: dict[str, Path] = option(
        help="the saved policy of each kind (amortised, surrogate)", factory=dict
    )
    target_seed: int = option(0, "fewer targets than the scenario lists: the seed of their draw")
    ready_timeout: float = option(
        READY_TIMEOUT,
        "wait this long for the server's /readyz (backoff, 0.5 s to 10 s)",
        flag="--wait-ready",
        metavar="SECONDS",
        parse=seconds,
    )
    detectors: tuple[DetectorName, ...] = option(
        (), "shilling detectors the server runs on each world before it is deleted"
    )
    # a learner trained in a defended world learns from its defended model (the adaptive
    # attacker)
    defence: Defence = option("none", "every world defended by this detector (learners adapt)")
    progress: bool = option(True, "a progress bar on the terminal")

    def checkpoints(self) -> list[int]:
        if self.threat_model == "retrain":
            return []
        return list(range(self.checkpoint_every, self.budget + 1, self.checkpoint_every))


# the learning methods: CopyAttack and its ablations, as flags of CopyAttackArgs
LEARNED: dict[str, dict[str, Any]] = {
    "PolicyNetwork": {"depth": 1},
    "CopyAttack-Masking": {"masking": False, "crafting": False},
    "CopyAttack-Length": {"crafting": False},
    "CopyAttack": {},
}


def method_of(
    name: str,
    args: CopyAttackArgs,
    policies: dict[str, PretrainedPolicy] | None = None,
) -> AttackMethod:
    """The attack behind a method name (``policies``: the loaded pretrained ones)."""
    fixed: dict[str, AttackMethod] = {
        "WithoutAttack": without_attack,
        "RandomAttack": random_attack,
        "TargetAttack40": functools.partial(target_attack, share=0.4),
        "TargetAttack70": functools.partial(target_attack, share=0.7),
        "TargetAttack100": functools.partial(target_attack, share=1.0),
    }
    if name in fixed:
        return fixed[name]
    if name in GENERATED:
        return generated_method(name)
    if name in LEARNED:
        return functools.partial(copyattack, args=dataclasses.replace(args, **LEARNED[name]))
    if name in PRETRAINED:
        kind, fine_tune = PRETRAINED[name]
        if not policies or kind not in policies:
            raise CopyAttackError(f"{name} needs a {kind} policy (--{kind}-policy FILE)")
        return functools.partial(
            copyattack_pretrained,
            pretrained=policies[kind],
            fine_tune_episodes=args.episodes if fine_tune else 0,
        )
    raise CopyAttackError(f"unknown method {name!r}; known: {', '.join(ALL_METHODS)}")


# --- one cell -----------------------------------------------------------------------------


def _flatten(report: EvaluationReport, side: str) -> dict[str, dict[str, dict[str, float]]]:
    """cohort -> protocol -> metric -> value, of the world ('after') or clean ('before')."""
    cohorts = report.targets[0].cohorts
    return {cohort: getattr(entry, side) for cohort, entry in cohorts.items()}


@dataclass
class Experiment:
    config: ExperimentConfig
    view: AttackerView
    embeddings: SourceEmbeddings
    targets: list[int]
    policies: dict[str, PretrainedPolicy] = field(default_factory=dict)
    platform: PlatformStats | None = None  # for the generated-profile attacks
    _trees: dict[int, BalancedClusterTree] = field(default_factory=dict)

    def tree(self, depth: int) -> BalancedClusterTree:
        """The clustering tree of the source users, built once per depth."""
        if depth not in self._trees:
            self._trees[depth] = BalancedClusterTree.build(self.embeddings.users, depth, seed=0)
        return self._trees[depth]

    def tree_depths(self) -> set[int]:
        """The depths of the trees the configured methods walk."""
        depths = {
            LEARNED[m].get("depth", self.config.attack.depth)
            for m in self.config.methods
            if m in LEARNED
        }
        return depths | {p.attack.depth for p in self.policies.values()}

    async def run_cell(
        self, admin: AsyncAdminClient, method: str, target: int, seed: int
    ) -> dict[str, Any]:
        config = self.config
        # the same seed gives every method the same pretend users: paired comparisons
        world = await admin.create_world(
            n_pretend_users=config.pretend_users, seed=seed, defence=config.defence
        )
        checkpoints: dict[int, Any] = {}
        last: tuple[int, EvaluationReport] | None = None  # the last checkpoint, whole
        started = time.perf_counter()
        try:
            async with AsyncClient(config.server, world.api_key) as client:

                async def on_injected(count: int) -> None:
                    nonlocal last
                    if count in config.checkpoints():
                        # the curve needs the sampled protocol only (half the cost); at the
                        # full budget both, as that report usually is the final one
                        protocols = PROTOCOLS if count == config.budget else ("sampled",)
                        report = await admin.evaluate(world.world_id, [target], protocols)
                        checkpoints[count] = _flatten(report, "after")
                        last = (count, report)

                ctx = AttackContext(
                    client=client,
                    admin=admin,
                    world=world,
                    view=self.view,
                    embeddings=self.embeddings,
                    trees=self.tree,
                    target=target,
                    budget=config.budget,
                    seed=seed,
                    on_injected=on_injected,
                    platform=self.platform,
                )
                attack = method_of(method, config.attack, self.policies)
                info = await attack(ctx)
            if config.threat_model == "retrain":
                await admin.retrain_world(world.world_id, config.retrain_epochs)
            spent = len(ctx.injected_lengths)
            if last is not None and last[0] == spent == config.budget:  # same state, both
                report = last[1]
            else:
                report = await admin.evaluate(world.world_id, [target])
            usage = await admin.usage(world.world_id)
            detection = {
                name: (await admin.detect(world.world_id, name, include_users=False)).model_dump(
                    exclude={"users", "world_id", "detector"}
                )
                for name in config.detectors
            }
        finally:
            await admin.delete_world(world.world_id)
        lengths = ctx.injected_lengths
        return {
            "method": method,
            "target": target,
            "seed": seed,
            "after": _flatten(report, "after"),
            "before": _flatten(report, "before"),
            "n_users": {c: e.n_users for c, e in report.targets[0].cohorts.items()},
            "checkpoints": {str(k): v for k, v in checkpoints.items()},
            "profiles": len(lengths),
            "items_per_profile": float(np.mean(lengths)) if lengths else 0.0,
            "queries": usage.total.queries,
            "injections": usage.total.injections,
            "injected_items": usage.total.items,
            "seconds": round(time.perf_counter() - started, 2),
            "info": info,
            **({"detection": detection} if detection else {}),
            **({"quarantined": usage.quarantined} if config.defence != "none" else {}),
        }


# --- where cells run ----------------------------------------------------------------------

Cell = tuple[str, int, int]  # (method, target, seed)
Record = Callable[[dict[str, Any]], None]  # takes each finished cell's result


class CellPool(Protocol):
    """Servers of one model, open for one run: runs cells and hands each result to
    ``record`` as it finishes."""

    model: ModelInfo

    async def run(self, experiment: Experiment, cells: Sequence[Cell], record: Record) -> None: ...


class Servers(Protocol):
    """Where a run's cells go: one server (the default) or replicas on a Ray cluster
    (``attacker_client.cluster``)."""

    def session(
        self, config: ExperimentConfig, view: AttackerView
    ) -> AbstractAsyncContextManager[CellPool]: ...


@dataclass
class OneServer:
    """The server at ``config.server``, ``config.concurrency`` worlds at once."""

    admin: AsyncAdminClient | None = None
    model: ModelInfo | None = None

    @asynccontextmanager
    async def session(
        self, config: ExperimentConfig, view: AttackerView
    ) -> AsyncIterator[OneServer]:
        await wait_until_ready(config.server, config.ready_timeout)
        async with AsyncAdminClient(config.server, config.admin_token, timeout=600) as admin:
            self.admin = admin
            self.model = await admin.model_info()
            require_scenario_of(self.model, view, config.scenario)
            yield self

    async def run(self, experiment: Experiment, cells: Sequence[Cell], record: Record) -> None:
        admin = self.admin
        assert admin is not None, "run() outside session()"
        slots = asyncio.Semaphore(experiment.config.concurrency)

        async def one(cell: Cell) -> None:
            async with slots:
                result = await experiment.run_cell(admin, *cell)
            record(result)

        await asyncio.gather(*(one(cell) for cell in cells))


# --- the whole run ----------------------------------------------------------------------


def _cell_key(cell: dict[str, Any]) -> tuple[str, int, int]:
    return cell["method"], int(cell["target"]), int(cell["seed"])


def read_cells(path: Path) -> list[dict[str, Any]]:
    """Finished cells of an earlier run (a torn last line, from a kill, is dropped)."""
    if not path.is_file():
        return []
    cells = []
    for line in path.read_text().splitlines():
        try:
            cells.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return cells


def run_key(
    config: ExperimentConfig, model: ModelInfo, policies: dict[str, PretrainedPolicy]
) -> dict[str, Any]:
    """What a finished cell's numbers depend on, besides its (method, target, seed): a
    resumed run may add methods, targets or seeds, but must not mix other settings in."""
    settings = _jsonable(config)
    # where things are and how fast they run do not change a cell's numbers
    free = (
        "server",
        "scenario",
        "out",
        "methods",
        "targets",
        "decile",
        "seeds",
        "concurrency",
        "policies",
        "target_seed",
        "ready_timeout",
        "progress",
    )
    for name in free:
        settings.pop(name)
    # runs recorded before detection and defences existed resume
    if not settings["detectors"]:
        settings.pop("detectors")
    if settings["defence"] == "none":
        settings.pop("defence")
    # an attack option left unset is the behaviour from before the option existed, so a
    # run recorded by an earlier version (without the field) resumes
    settings["attack"] = {k: v for k, v in settings["attack"].items() if v is not None}
    return {
        **settings,
        "scenario": model.scenario_fingerprint,
        "model": model.model_fingerprint,
        # a policy by its content, wherever its file lies
        **{f"{kind}_policy": sha256_file(p.path) for kind, p in policies.items()},
    }


def claim_run(
    config: ExperimentConfig,
    model: ModelInfo,
    policies: dict[str, PretrainedPolicy],
    *,
    has_cells: bool,
) -> None:
    """Record the run's key in ``run.json``; refuse to resume cells of another key."""
    path = config.out / "run.json"
    key = run_key(config, model, policies)
    if has_cells and not path.is_file():
        raise CopyAttackError(
            f"{config.out} holds cells of a run that recorded no run.json (an older version): "
            "their settings and model cannot be checked; choose another --out"
        )
    if has_cells:
        earlier = json.loads(path.read_text())
        # a policy new to the run serves only methods its earlier cells could not have run
        changed = sorted(
            name
            for name in key.keys() | earlier.keys()
            if key.get(name) != earlier.get(name)
            and not (name.endswith("_policy") and name not in earlier)
        )
        if changed:
            details = ", ".join(f"{n}: {earlier.get(n)!r} -> {key.get(n)!r}" for n in changed)
            raise CopyAttackError(
                f"{config.out} holds cells of another run ({details}); resume with the same "
                "settings and model, or choose another --out"
            )
    write_text_atomic(path, json.dumps(key, indent=1))


def _load_policies(config: ExperimentConfig, view: AttackerView) -> dict[str, PretrainedPolicy]:
    wanted = {PRETRAINED[m][0] for m in config.methods if m in PRETRAINED}
    missing = wanted - config.policies.keys()
    if missing:
        flags = ", ".join(f"--{kind}-policy" for kind in sorted(missing))
        raise CopyAttackError(f"the pretrained methods asked for need {flags}")
    return {kind: load_policy(config.policies[kind], view) for kind in sorted(wanted)}


async def run_table2(config: ExperimentConfig, servers: Servers | None = None) -> dict[str, Any]:
    """One Table 2 run: its cells on ``servers`` (default: the one at ``config.server``)."""
    cells, started = await run_cells(config, "table2", servers)
    summary = summarise(cells, config)
    summary["wall_seconds_this_run"] = round(time.perf_counter() - started, 1)
    summary["machine"] = machine()  # where the attacker ran; beside the server in our runs
    write_outputs(summary, cells, config.out)
    return summary


async def run_cells(
    config: ExperimentConfig, name: str, servers: Servers | None = None
) -> tuple[list[dict[str, Any]], float]:
    """Every (method, target, seed) cell of the run, those of ``cells.jsonl`` resumed, the
    rest run on ``servers`` (default: the one at ``config.server``); and when this run
    started (``time.perf_counter``)."""
    view = load_attacker_view(config.scenario)
    pool = view.cold_targets if config.decile is None else view.decile_targets[config.decile]
    targets = draw_targets(pool, config.targets, config.target_seed)
    policies = _load_policies(config, view)
    overlap = {k: sorted(set(p.training_targets) & set(targets)) for k, p in policies.items()}
    if any(overlap.values()):
        raise CopyAttackError(f"a policy was trained on evaluated targets: {overlap}")
    config.out.mkdir(parents=True, exist_ok=True)
    cells_path = config.out / "cells.jsonl"
    done = {_cell_key(c): c for c in read_cells(cells_path)}
    todo = [
        (method, target, seed)
        for seed in config.seeds
        for target in targets
        for method in config.methods
        if (method, target, seed) not in done
    ]
    started = time.perf_counter()
    async with (servers or OneServer()).session(config, view) as replicas:
        claim_run(config, replicas.model, policies, has_cells=bool(done))  # before the slow part
        # the source MF and the trees take seconds: built off the event loop, so that open
        # connections are not left unread meanwhile
        embeddings = await asyncio.to_thread(
            cached_source_mf, view, SourceMFConfig(seed=0), config.cache_dir or config.out
        )
        platform = None
        if any(m in GENERATED for m in config.methods):
            platform = await asyncio.to_thread(target_platform_stats, config.scenario)
        experiment = Experiment(config, view, embeddings, targets, policies, platform)
        for depth in sorted(experiment.tree_depths()):
            await asyncio.to_thread(experiment.tree, depth)
        progress = tqdm(
            total=len(todo) + len(done),
            initial=len(done),
            desc=name,
            disable=not config.progress,
        )
        with open(cells_path, "a") as sink:

            def record(result: dict[str, Any]) -> None:
                sink.write(json.dumps(result) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                done[_cell_key(result)] = result
                progress.update()

            await replicas.run(experiment, todo, record)
        progress.close()
    cells = [done[(m, t, s)] for s in config.seeds for t in targets for m in config.methods]
    return cells, started


# --- statistics and outputs -------------------------------------------------------------


def _interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def summarise(cells: list[dict[str, Any]], config: ExperimentConfig) -> dict[str, Any]:
    by_method: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        by_method.setdefault(cell["method"], []).append(cell)
    rows = {}
    for method, group in by_method.items():
        metrics: dict[str, Any] = {}
        for cohort in group[0]["after"]:
            for protocol, values in group[0]["after"][cohort].items():
                for name in values:
                    series = [c["after"][cohort][protocol][name] for c in group]
                    mean, half = _interval(series)
                    metrics[f"{cohort}/{protocol}/{name}"] = {"mean": mean, "ci95": half}
        curve = {}
        for budget in config.checkpoints():
            points = [c["checkpoints"].get(str(budget)) for c in group]
            if all(p is not None for p in points):
                curve[budget] = {
                    name: float(np.mean([p["all"]["sampled"][name] for p in points]))
                    for name in ("HR@20", "NDCG@20")
                }
        rows[method] = {
            "cells": len(group),
            "targets": len({c["target"] for c in group}),
            "metrics": metrics,
            "items_per_profile": float(np.mean([c["items_per_profile"] for c in group])),
            "queries": float(np.mean([c["queries"] for c in group])),
            "injections": float(np.mean([c["injections"] for c in group])),
            "seconds": float(np.mean([c["seconds"] for c in group])),
            "reward_density": _reward_density(group),
            # a pretrained policy's training cost, shared by this table's targets
            "amortised_queries": _policy_cost_per_target(group, "training_queries"),
            "amortised_injections": _policy_cost_per_target(group, "training_injections"),
            "budget_curve": curve,
        }
    early = [b for b in PAIRED_BUDGETS if b in config.checkpoints() and b < config.budget]
    tests = [
        paired_test(by_method, metric, learner, budget)
        for learner in LEARNERS
        for metric, budget in [
            *((m, None) for m in PAIRED_METRICS),
            *((PAIRED_METRICS[0], b) for b in early),
        ]
    ]
    return {
        "methods": rows,
        "paired_tests": [test for test in tests if test is not None],
        "config": _jsonable(config),
    }


def _policy_cost_per_target(group: list[dict[str, Any]], key: str) -> float:
    """The policy's whole training cost over the number of targets in the table: computed
    here, not taken from the cells, which recorded the share of the run that made them (a
    resumed run with more or fewer targets would mix shares)."""
    cost = float(np.mean([c["info"].get("policy", {}).get(key, 0.0) for c in group]))
    return cost / len({c["target"] for c in group})


def _reward_density(group: list[dict[str, Any]]) -> float | None:
    """Over the cells that asked anything (cells recorded before a spend that asked
    nothing stopped reporting a density of 0 still hold one)."""
    asked = [c for c in group if c["info"].get("reward_rounds", 1) > 0]
    return _mean_info(asked, "reward_density")


def _mean_info(group: list[dict[str, Any]], key: str) -> float | None:
    values = [c["info"][key] for c in group if key in c["info"]]
    return float(np.mean(values)) if values else None


def paired_test(
    by_method: dict[str, list[dict[str, Any]]],
    metric: tuple[str, str, str],
    learner: str = "CopyAttack",
    budget: int | None = None,
) -> dict[str, Any] | None:
    """``learner`` against the best method that is not one of the learners on ``metric``
    (cohort, protocol, name), paired by (target, seed): Wilcoxon signed-rank and paired t;
    and its gain over WithoutAttack as a multiple of that method's gain. With ``budget``,
    at that checkpoint of the budget curve (sampled protocol only), not after the spend."""
    others = [m for m in by_method if m not in LEARNERS]
    if learner not in by_method or not others:
        return None
    cohort, protocol, name = metric

    def series(method: str) -> dict[tuple[int, int], float]:
        if budget is None:
            measured = [(c, c["after"]) for c in by_method[method]]
        else:  # a WithoutAttack cell injects nothing: every checkpoint is its clean state
            measured = [
                (c, c["after"] if c["profiles"] == 0 else c["checkpoints"].get(str(budget)))
                for c in by_method[method]
            ]
        return {
            (c["target"], c["seed"]): after[cohort][protocol][name]
            for c, after in measured
            if after is not None
        }

    ours = series(learner)
    other = {m: values for m in others if (values := series(m))}
    if not ours or not other:
        return None
    best = max(other, key=lambda m: np.mean(list(other[m].values())))
    keys = sorted(ours.keys() & other[best].keys())
    a = np.array([ours[k] for k in keys])
    b = np.array([other[best][k] for k in keys])
    differences = a - b
    result: dict[str, Any] = {
        "learner": learner,
        "metric": "/".join(metric),
        "budget": budget,
        "best_other": best,
        "pairs": len(keys),
        "mean_difference": float(differences.mean()),
        "copyattack_wins": int((differences > 0).sum()),
        "ties": int((differences == 0).sum()),
    }
    clean_known = "WithoutAttack" in other and set(keys) <= other["WithoutAttack"].keys()
    if clean_known and best != "WithoutAttack":
        clean = np.array([other["WithoutAttack"][k] for k in keys])
        gain = float((b - clean).mean())
        result["gain_ratio"] = float((a - clean).mean()) / gain if gain > 0 else None
    if len(keys) >= 2 and differences.any():
        result["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
        result["paired_t_p"] = float(stats.ttest_rel(a, b).pvalue)
    return result


def _jsonable(config: ExperimentConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out.pop("admin_token")
    return json.loads(json.dumps(out, default=str))


def write_outputs(summary: dict[str, Any], cells: list[dict[str, Any]], out: Path) -> None:
    """Each file whole or not at all: a run stopped mid-write keeps the previous version of
    each file it had not replaced yet."""
    write_text_atomic(out / "table2.json", json.dumps({**summary, "cells": cells}, indent=1))
    table = [["method", "metric", "mean", "ci95", "cells"]]
    for method, row in summary["methods"].items():
        for metric, value in row["metrics"].items():
            table.append(
                [method, metric, f"{value['mean']:.5f}", f"{value['ci95']:.5f}", row["cells"]]
            )
    write_text_atomic(out / "table2.csv", _csv_text(table))
    curve = [["method", "budget", "HR@20", "NDCG@20"]]
    for method, row in summary["methods"].items():
        for budget, point in row["budget_curve"].items():
            curve.append([method, budget, f"{point['HR@20']:.5f}", f"{point['NDCG@20']:.5f}"])
    write_text_atomic(out / "budget_curve.csv", _csv_text(curve))
    write_text_atomic(out / "table2.md", format_table2(summary))
    plot_budget_curve(summary, out / "budget_curve.png")


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _save_figure(figure: Any, path: Path) -> None:
    """A PNG written whole or not at all, then the figure's memory released."""
    import matplotlib.pyplot as plt

    try:
        figure.tight_layout()
        with staged_file(path) as staging:
            figure.savefig(staging, dpi=120, format="png")
    finally:
        plt.close(figure)


# fewer target items than this: the t interval rests on too few values to be read
MIN_TARGETS_FOR_INTERVAL = 5
FEW_TARGETS = "†"


def _targets(row: dict[str, Any]) -> int:
    return row.get("targets", row["cells"])  # a summary written before targets were counted


def _mean_and_interval(row: dict[str, Any], metric: str) -> str:
    value = row["metrics"][metric]
    flag = FEW_TARGETS if _targets(row) < MIN_TARGETS_FOR_INTERVAL else ""
    return f"{value['mean']:.4f} ± {value['ci95']:.4f}{flag}"


def format_table2(summary: dict[str, Any]) -> str:
    """The paper's Table 2 layout, one table per protocol (cohort: all evaluation users),
    with what the ± means above it and a flag on intervals over fewer than 5 targets."""
    rows = summary["methods"].values()
    lines = [
        "Mean ± half-width of its 95% Student t interval (n - 1 degrees of freedom) over the "
        "cells of each method (target items x seeds).",
        "",
    ]
    names = ("HR@20", "HR@10", "HR@5", "NDCG@20", "NDCG@10", "NDCG@5")
    for protocol in ("sampled", "full"):
        lines += [
            f"**{protocol}** ({'100 sampled negatives' if protocol == 'sampled' else 'all items'})",
            "",
            "| method | "
            + " | ".join(names)
            + " | items/profile | reward density | queries | + training queries | s/cell |",
            "|---" * (len(names) + 6) + "|",
        ]
        for method, row in summary["methods"].items():
            cells = [_mean_and_interval(row, f"all/{protocol}/{n}") for n in names]
            density = row.get("reward_density")
            lines.append(
                f"| {method} | "
                + " | ".join(cells)
                + f" | {row['items_per_profile']:.1f}"
                + f" | {'' if density is None else f'{density:.2f}'} | {row['queries']:.0f}"
                f" | {row.get('amortised_queries', 0.0):.0f} | {row['seconds']:.1f} |"
            )
        lines.append("")
    few = sorted({_targets(row) for row in rows if _targets(row) < MIN_TARGETS_FOR_INTERVAL})
    if few:
        lines += [
            f"{FEW_TARGETS} fewer than {MIN_TARGETS_FOR_INTERVAL} target items "
            f"({', '.join(map(str, few))}): too few for the t interval to be read; "
            "a smoke test, not a result.",
            "",
        ]
    for test in summary["paired_tests"]:
        p = test.get("wilcoxon_p")
        lines.append(
            f"Paired test on {test['metric']}"
            + (f" at budget {test['budget']}" if test.get("budget") else "")
            + f": {test['learner']} - {test['best_other']} = "
            f"{test['mean_difference']:+.4f} over {test['pairs']} pairs "
            f"({test['copyattack_wins']} wins, {test['ties']} ties"
            + (f"; Wilcoxon p = {p:.3g}, paired t p = {test['paired_t_p']:.3g})" if p else ")")
            + (
                f"; gain over WithoutAttack {test['gain_ratio']:.2f}x the best other's"
                if test.get("gain_ratio") is not None
                else ""
            )
        )
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_budget_curve(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    budgets_all = [int(b) for row in summary["methods"].values() for b in row["budget_curve"]]
    for method, row in summary["methods"].items():
        curve = row["budget_curve"]
        if not curve:  # nothing injected: the clean level, flat
            if budgets_all:
                for axis, name in zip(axes, ("HR@20", "NDCG@20"), strict=True):
                    level = row["metrics"][f"all/sampled/{name}"]["mean"]
                    axis.axhline(level, linestyle="--", color="grey", label=method)
            continue
        budgets = sorted(int(b) for b in curve)
        for axis, name in zip(axes, ("HR@20", "NDCG@20"), strict=True):
            axis.plot(budgets, [curve[b][name] for b in budgets], marker="o", label=method)
    for axis, name in zip(axes, ("HR@20", "NDCG@20"), strict=True):
        axis.set_xlabel("budget (injected profiles)")
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
        axis.grid(alpha=0.3)
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    _save_figure(figure, path)


# --- sweeps (Figures 3 and 4): Table 2 runs over one varied setting ----------------------


async def run_sweep(
    base: ExperimentConfig, setting: str, values: Sequence[int], servers: Servers | None = None
) -> list[dict[str, Any]]:
    """One Table 2 run per value of ``setting`` ("depth" or "decile"), each in its own
    subfolder (so each resumes), then ``{setting}_sweep.csv`` and ``.png``."""
    rows = []
    shared = {"cache_dir": base.cache_dir or base.out}  # one source MF for every value
    for value in values:
        if setting == "depth":
            config = dataclasses.replace(
                base,
                out=base.out / f"depth_{value}",
                attack=dataclasses.replace(base.attack, depth=value),
                **shared,
            )
        elif setting == "decile":
            config = dataclasses.replace(
                base, out=base.out / f"decile_{value}", decile=value, **shared
            )
        else:
            raise CopyAttackError(f"unknown sweep {setting!r}")
        summary = await run_table2(config, servers)
        for method, row in summary["methods"].items():
            rows.append(
                {
                    setting: value,
                    "method": method,
                    **{
                        name: row["metrics"][f"all/sampled/{name}"]["mean"]
                        for name in ("HR@20", "NDCG@20")
                    },
                }
            )
    columns = [setting, "method", "HR@20", "NDCG@20"]
    table = [columns, *([row[c] for c in columns] for row in rows)]
    write_text_atomic(base.out / f"{setting}_sweep.csv", _csv_text(table))
    plot_sweep(rows, setting, base.out / f"{setting}_sweep.png")
    return rows


def plot_sweep(rows: list[dict[str, Any]], setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [r for r in rows if r["method"] == method]
        for axis, name in zip(axes, ("HR@20", "NDCG@20"), strict=True):
            axis.plot(
                [p[setting] for p in points], [p[name] for p in points], marker="o", label=method
            )
    for axis, name in zip(axes, ("HR@20", "NDCG@20"), strict=True):
        axis.set_xlabel("tree depth" if setting == "depth" else "popularity decile (0 = least)")
        axis.set_ylabel(f"{name} (sampled, all evaluation users)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save_figure(figure, path)


# --- the learning curve of a pretrained policy -------------------------------------------


async def run_learning_curve(
    base: ExperimentConfig,
    pretrained: Path,
    baselines: Path | None,
    servers: Servers | None = None,
) -> list[dict[str, Any]]:
    """Each snapshot of a ``copyattack experiment pretrain`` folder spends the budget on
    the evaluated targets as it is (a Table 2 of one method, in its own subfolder, so each
    resumes); then ``learning_curve.csv`` and ``.png``: sampled HR@20 against the target
    queries spent training, with the methods of ``baselines`` (a table2.json) flat."""
    summary = json.loads((pretrained / "pretrain.json").read_text())
    kind = "surrogate" if summary["pretrain"]["backend"] == "surrogate" else "amortised"
    method = PRETRAINED_NAME[kind]
    rows = []
    for snapshot in summary["snapshots"]:
        config = dataclasses.replace(
            base,
            out=base.out / f"update_{snapshot['update']:04d}",
            methods=(method,),
            policies={kind: pretrained / snapshot["path"]},
            cache_dir=base.cache_dir or base.out,
        )
        result = await run_table2(config, servers)
        metric = result["methods"][method]["metrics"]["all/sampled/HR@20"]
        rows.append(
            {
                "update": snapshot["update"],
                "training_queries": snapshot["queries"],
                "training_injections": snapshot["injections"],
                "HR@20": metric["mean"],
                "ci95": metric["ci95"],
            }
        )
    columns = ["update", "training_queries", "training_injections", "HR@20", "ci95"]
    table = [columns, *([row[c] for c in columns] for row in rows)]
    write_text_atomic(base.out / "learning_curve.csv", _csv_text(table))
    flat = {}
    if baselines is not None:
        earlier = json.loads(baselines.read_text())
        flat = {m: r["metrics"]["all/sampled/HR@20"]["mean"] for m, r in earlier["methods"].items()}
    plot_learning_curve(rows, flat, method, base.out / "learning_curve.png")
    return rows


# the method that spends a pretrained policy as it is, per kind of policy
PRETRAINED_NAME = {kind: name for name, (kind, fine_tune) in PRETRAINED.items() if not fine_tune}


def learning_curve_x(rows: list[dict[str, Any]]) -> tuple[str, list[int]]:
    """The curve's x axis: target queries spent training, or, for a policy trained on
    the surrogate (zero target queries at every snapshot), its updates."""
    if all(row["training_queries"] == 0 for row in rows):
        return "policy updates on the surrogate (zero target queries)", [
            row["update"] for row in rows
        ]
    return "target queries spent training the policy", [row["training_queries"] for row in rows]


def plot_learning_curve(
    rows: list[dict[str, Any]], flat: dict[str, float], method: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    x_label, x = learning_curve_x(rows)
    axis.errorbar(
        x,
        [r["HR@20"] for r in rows],
        yerr=[r["ci95"] for r in rows],
        marker="o",
        capsize=3,
        label=method,
        color="black",
    )
    for name, level in flat.items():
        axis.axhline(level, linestyle="--", linewidth=1, label=name, color=f"C{len(axis.lines)}")
    axis.set_xlabel(x_label)
    axis.set_ylabel("HR@20 (sampled), evaluated targets")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    _save_figure(figure, path)
