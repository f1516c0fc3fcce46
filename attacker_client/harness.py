"""The experiment harness: runs the paper's Table 2 and budget curve over HTTP.

Every (method, target item, seed) is a cell run in its own world, several at once. A
cell's final spend is evaluated by the server's admin evaluation at each checkpoint
budget (5, 10, ..., budget: the budget curve of Fig. 5, from the same runs) and at the
end. Finished cells are appended to ``cells.jsonl`` as they end, so an interrupted run
resumes without redoing them.

Here: the settings (:class:`ExperimentConfig`) and the running of cells, runs, sweeps and
learning curves. Elsewhere, one job each: the methods by name (:mod:`.methods`), the
typed results and their files (:mod:`.results`), resuming (:mod:`.resume`), the means,
intervals and paired tests (:mod:`.statistics`), the tables and CSV files
(:mod:`.report`) and the figures (:mod:`.figures`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
from tqdm import tqdm

from attacker_client._client import AsyncAdminClient, AsyncClient
from attacker_client.attack import AttackContext, require_scenario_of
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.figures import summary_title
from attacker_client.generated import GENERATED, target_platform_stats
from attacker_client.methods import (
    ALL_METHODS,
    LEARNED,
    METHODS,
    PRETRAINED,
    PRETRAINED_NAME,
    method_of,
)
from attacker_client.pretrain import PretrainedPolicy, load_policy
from attacker_client.readiness import READY_TIMEOUT, wait_until_ready
from attacker_client.report import write_learning_curve, write_outputs, write_sweep
from attacker_client.results import (
    CURVE_METRICS,
    HEADLINE,
    CellKey,
    CellResult,
    Measured,
    Snapshot,
    Summary,
    SweepPoint,
    cell_line,
    read_cells,
    read_table2,
    sampled,
)
from attacker_client.resume import claim_run
from attacker_client.source_mf import SourceEmbeddings, SourceMFConfig, cached_source_mf
from attacker_client.statistics import summarise
from attacker_client.tree import BalancedClusterTree
from shared.errors import CopyAttackError
from shared.fake_profiles import PlatformStats
from shared.machine import machine
from shared.options import option, seconds
from shared.scenario import AttackerView, draw_targets, load_attacker_view, read_manifest
from shared.schemas import PROTOCOLS, Defence, DetectorName, EvaluationReport, ModelInfo


@dataclass(frozen=True)
class ExperimentConfig:
    server: str = option(help="base URL of the recommender service")
    admin_token: str = option(help="bearer token of the /admin routes")
    scenario: Path = option(help="the scenario folder")
    out: Path = option(help="results (resumed)")
    methods: tuple[str, ...] = option(
        METHODS, f"of: {', '.join(ALL_METHODS)}", choices=ALL_METHODS, metavar="METHOD"
    )
    targets: int = option(50, "cold target items: a seeded draw from the scenario's list")
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


# --- one cell -----------------------------------------------------------------------------


def _flatten(report: EvaluationReport, side: str) -> Measured:
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
    ) -> CellResult:
        config = self.config
        # the same seed gives every method the same pretend users: paired comparisons
        world = await admin.create_world(
            n_pretend_users=config.pretend_users, seed=seed, defence=config.defence
        )
        checkpoints: dict[int, Measured] = {}
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
        # detection and quarantine are left unset (out of the file) when not asked for
        optional: dict[str, Any] = {
            **({"detection": detection} if detection else {}),
            **({"quarantined": usage.quarantined} if config.defence != "none" else {}),
        }
        return CellResult(
            method=method,
            target=target,
            seed=seed,
            after=_flatten(report, "after"),
            before=_flatten(report, "before"),
            n_users={c: e.n_users for c, e in report.targets[0].cohorts.items()},
            checkpoints=checkpoints,
            profiles=len(lengths),
            items_per_profile=float(np.mean(lengths)) if lengths else 0.0,
            queries=usage.total.queries,
            injections=usage.total.injections,
            injected_items=usage.total.items,
            seconds=round(time.perf_counter() - started, 2),
            info=info,
            **optional,
        )


# --- where cells run ----------------------------------------------------------------------

Cell = CellKey  # (method, target, seed)
Record = Callable[[CellResult], None]  # takes each finished cell's result


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


class OneServer:
    """The server at ``config.server``, ``config.concurrency`` worlds at once."""

    @asynccontextmanager
    async def session(
        self, config: ExperimentConfig, view: AttackerView
    ) -> AsyncIterator[ServerPool]:
        await wait_until_ready(config.server, config.ready_timeout)
        async with AsyncAdminClient(config.server, config.admin_token, timeout=600) as admin:
            model = await admin.model_info()
            require_scenario_of(model, view, config.scenario)
            yield ServerPool(admin, model)


@dataclass
class ServerPool:
    """One server's session: its admin client and the model it serves."""

    admin: AsyncAdminClient
    model: ModelInfo

    async def run(self, experiment: Experiment, cells: Sequence[Cell], record: Record) -> None:
        slots = asyncio.Semaphore(experiment.config.concurrency)

        async def one(cell: Cell) -> None:
            async with slots:
                result = await experiment.run_cell(self.admin, *cell)
            record(result)

        await asyncio.gather(*(one(cell) for cell in cells))


# --- the whole run ----------------------------------------------------------------------


def _load_policies(config: ExperimentConfig, view: AttackerView) -> dict[str, PretrainedPolicy]:
    wanted = {PRETRAINED[m][0] for m in config.methods if m in PRETRAINED}
    missing = wanted - config.policies.keys()
    if missing:
        flags = ", ".join(f"--{kind}-policy" for kind in sorted(missing))
        raise CopyAttackError(f"the pretrained methods asked for need {flags}")
    return {kind: load_policy(config.policies[kind], view) for kind in sorted(wanted)}


async def run_table2(config: ExperimentConfig, servers: Servers | None = None) -> Summary:
    """One Table 2 run: its cells on ``servers`` (default: the one at ``config.server``)."""
    run = await run_cells(config, "table2", servers)
    summary = summarise(run.cells, config)
    summary.wall_seconds_this_run = round(time.perf_counter() - run.started, 1)
    summary.machine = machine()  # where the attacker ran; beside the server in our runs
    summary.pair, summary.victim = pair_of(config.scenario), run.victim
    write_outputs(summary, run.cells, config.out)
    return summary


def pair_of(scenario: Path) -> str:
    """The scenario's source and target platforms, as the figures name them."""
    manifest = read_manifest(scenario)
    return f"{manifest['source']} → {manifest['target']}"


class FinishedCells(NamedTuple):
    cells: list[CellResult]  # in the run's order: seed, target, method
    started: float  # when this run started (``time.perf_counter``)
    victim: str  # the family of the recommender the cells attacked


async def run_cells(
    config: ExperimentConfig, name: str, servers: Servers | None = None
) -> FinishedCells:
    """Every (method, target, seed) cell of the run, those of ``cells.jsonl`` resumed, the
    rest run on ``servers`` (default: the one at ``config.server``)."""
    view = load_attacker_view(config.scenario)
    pool = view.cold_targets if config.decile is None else view.decile_targets[config.decile]
    targets = draw_targets(pool, config.targets, config.target_seed)
    policies = _load_policies(config, view)
    overlap = {k: sorted(set(p.training_targets) & set(targets)) for k, p in policies.items()}
    if any(overlap.values()):
        raise CopyAttackError(f"a policy was trained on evaluated targets: {overlap}")
    config.out.mkdir(parents=True, exist_ok=True)
    cells_path = config.out / "cells.jsonl"
    done = {c.key: c for c in read_cells(cells_path)}
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
        victim = replicas.model.victim
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

            def record(result: CellResult) -> None:
                sink.write(cell_line(result))
                sink.flush()
                os.fsync(sink.fileno())
                done[result.key] = result
                progress.update()

            await replicas.run(experiment, todo, record)
        progress.close()
    cells = [done[(m, t, s)] for s in config.seeds for t in targets for m in config.methods]
    return FinishedCells(cells, started, victim)


# --- sweeps (Figures 3 and 4): Table 2 runs over one varied setting ----------------------


async def run_sweep(
    base: ExperimentConfig, setting: str, values: Sequence[int], servers: Servers | None = None
) -> list[SweepPoint]:
    """One Table 2 run per value of ``setting`` ("depth" or "decile"), each in its own
    subfolder (so each resumes), then ``{setting}_sweep.csv`` and ``.png``."""
    points: list[SweepPoint] = []
    summaries: list[Summary] = []
    cache_dir = base.cache_dir or base.out  # one source MF for every value
    for value in values:
        if setting == "depth":
            config = dataclasses.replace(
                base,
                out=base.out / f"depth_{value}",
                attack=dataclasses.replace(base.attack, depth=value),
                cache_dir=cache_dir,
            )
        elif setting == "decile":
            config = dataclasses.replace(
                base, out=base.out / f"decile_{value}", decile=value, cache_dir=cache_dir
            )
        else:
            raise CopyAttackError(f"unknown sweep {setting!r}")
        summaries.append(await run_table2(config, servers))
        points += [
            SweepPoint(
                value=value,
                method=method,
                metrics={name: row.interval(sampled(name)) for name in CURVE_METRICS},
            )
            for method, row in summaries[-1].methods.items()
        ]
    title = f"{summary_title(summaries[0])} at each {setting}" if summaries else setting
    write_sweep(points, setting, title, base.out)
    return points


# --- the learning curve of a pretrained policy -------------------------------------------


async def run_learning_curve(
    base: ExperimentConfig,
    pretrained: Path,
    baselines: Path | None,
    servers: Servers | None = None,
) -> list[Snapshot]:
    """Each snapshot of a ``copyattack experiment pretrain`` folder spends the budget on
    the evaluated targets as it is (a Table 2 of one method, in its own subfolder, so each
    resumes); then ``learning_curve.csv`` and ``.png``: sampled HR@20 against the target
    queries spent training, with the methods of ``baselines`` (a table2.json) flat."""
    summary = json.loads((pretrained / "pretrain.json").read_text())
    kind = "surrogate" if summary["pretrain"]["backend"] == "surrogate" else "amortised"
    method = PRETRAINED_NAME[kind]
    snapshots: list[Snapshot] = []
    titles = []
    for snapshot in summary["snapshots"]:
        config = dataclasses.replace(
            base,
            out=base.out / f"update_{snapshot['update']:04d}",
            methods=(method,),
            policies={kind: pretrained / snapshot["path"]},
            cache_dir=base.cache_dir or base.out,
        )
        result = await run_table2(config, servers)
        titles.append(summary_title(result))
        snapshots.append(
            Snapshot(
                update=snapshot["update"],
                training_queries=snapshot["queries"],
                training_injections=snapshot["injections"],
                hit_rate=result.methods[method].interval(HEADLINE),
            )
        )
    flat = {}
    if baselines is not None:
        earlier = read_table2(baselines)
        flat = {m: r.interval(HEADLINE) for m, r in earlier.methods.items()}
    write_learning_curve(snapshots, flat, method, titles[0] if titles else method, base.out)
    return snapshots
