"""One CopyAttack policy trained across many targets, before the attack on the ones it is
judged on (the paper's state holds q^B_v*, so one policy can serve every target).

Training targets are drawn from the scenario's cold pool, never from the evaluated
targets; a validation share of them is set aside for choosing settings. Two places to
train:

- ``server``: worlds on the target service, through the same two attacker routes; every
  query and injection is counted by the server and charged to the evaluated targets
  (amortised cost = training cost / evaluated targets);
- ``surrogate``: the attacker's own recommender (``surrogate.py``), offline: zero queries
  and zero injections on the target before the attack.

Credit: each target is attacked ``group`` times per pass with the same policy, and the
group's mean return per query round is the baseline (the targets differ far more in how
far they can be pushed than the choices for one target do). Policy snapshots are saved
evenly over training, each with the training cost spent so far: the learning curve.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from attacker_client._client import AsyncAdminClient, AsyncClient
from attacker_client.attack import AttackContext, require_served_scenario
from attacker_client.copyattack import (
    CopyAttack,
    CopyAttackArgs,
    CopyAttackPolicy,
    Episode,
    discounted_returns,
    reinforce_loss,
    reward_summary,
    seed_everything,
)
from attacker_client.readiness import READY_TIMEOUT, wait_until_ready
from attacker_client.source_mf import SourceEmbeddings, SourceMFConfig, cached_source_mf
from attacker_client.surrogate import CooccurrenceSurrogate, SurrogateConfig, SurrogateWorld
from attacker_client.tree import BalancedClusterTree
from shared.atomic import staged_file, write_text_atomic
from shared.errors import CopyAttackError
from shared.options import option
from shared.scenario import AttackerView, load_attacker_view

POLICY_FORMAT = 1


@dataclass(frozen=True)
class PretrainArgs:
    backend: Literal["server", "surrogate"] = option(
        "server", "server: worlds on the target; surrogate: offline, zero target queries"
    )
    targets: int = option(40, "training targets, from the cold pool less the evaluated ones")
    validation_targets: int = option(10, "targets set aside (disjoint) for choosing settings")
    min_holders: int = option(1, "a training target is held by at least this many source users")
    passes: int = option(3, "passes over the training targets")
    group: int = option(2, "episodes per target per pass (their mean return is the baseline)")
    batch: int = option(4, "targets per policy update (attacked at once on the server)")
    snapshots: int = option(
        4, "policies saved evenly over training (the learning curve), besides the untrained one"
    )
    budget: int = option(30, "profiles per training episode")
    pretend_users: int = option(50, "pretend users per training world")
    seed: int = option(0, "seed of the split, the episodes and the policy")

    def __post_init__(self) -> None:
        if self.group < 2:  # one episode is its own baseline: no gradient at all
            raise ValueError(f"group must be at least 2 episodes per target, got {self.group}")


def split_targets(
    view: AttackerView,
    evaluated: list[int],
    n_train: int,
    n_validation: int,
    min_holders: int,
    seed: int,
) -> tuple[list[int], list[int]]:
    """Training and validation targets: a seeded draw from the cold pool, disjoint from
    the evaluated targets (every target of the scenario's own lists) and from each other."""
    holders = view.holder_counts()
    excluded = set(evaluated) | set(view.cold_targets)
    pool = [i for i in view.cold_pool if i not in excluded and holders[i] >= min_holders]
    if len(pool) < n_train + n_validation:
        raise CopyAttackError(
            f"the cold pool holds {len(pool)} items with at least {min_holders} source "
            f"holders outside the evaluated targets; asked for {n_train} training and "
            f"{n_validation} validation targets"
        )
    drawn = np.random.default_rng(seed).permutation(pool)[: n_train + n_validation]
    return sorted(drawn[:n_train].tolist()), sorted(drawn[n_train:].tolist())


def _round_baselines(returns: list[list[float]]) -> list[float]:
    """Per query round, the mean return over the group's episodes that reached it."""
    longest = max(len(r) for r in returns)
    return [float(np.mean([r[i] for r in returns if len(r) > i])) for i in range(longest)]


class Environment(ABC):
    """Where training episodes run: ``group`` attacks in a row on one target, and the
    target queries and injections they cost."""

    queries = 0  # of the target
    injections = 0
    local_queries = 0  # of the attacker's own surrogate

    @abstractmethod
    async def episodes(
        self,
        policy: CopyAttackPolicy,
        target: int,
        group: int,
        budget: int,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> list[Episode]: ...


class SurrogateEnvironment(Environment):
    def __init__(self, view: AttackerView, config: SurrogateConfig) -> None:
        self.view, self.surrogate = view, CooccurrenceSurrogate(view, config)

    async def episodes(
        self,
        policy: CopyAttackPolicy,
        target: int,
        group: int,
        budget: int,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> list[Episode]:
        task = policy.task(target, self.view.holders(target))
        out = []
        for _ in range(group):
            world = self.surrogate.world(target)

            async def inject(profile: np.ndarray, world: SurrogateWorld = world) -> None:
                world.inject(profile)

            async def ask(k: int, world: SurrogateWorld = world) -> list[list[int]]:
                return world.topk(k)

            out.append(
                await policy.rollout(
                    task, budget, self.view.source_profile, inject, ask, rng, generator
                )
            )
            self.local_queries += world.queries
        return out


class ServerEnvironment(Environment):
    def __init__(
        self,
        view: AttackerView,
        admin: AsyncAdminClient,
        server: str,
        pretend_users: int,
        seed: int,
    ) -> None:
        self.view, self.admin, self.server = view, admin, server
        self.pretend_users, self.seed = pretend_users, seed

    async def episodes(
        self,
        policy: CopyAttackPolicy,
        target: int,
        group: int,
        budget: int,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> list[Episode]:
        task = policy.task(target, self.view.holders(target))
        world = await self.admin.create_world(n_pretend_users=self.pretend_users, seed=self.seed)
        out = []
        try:
            async with AsyncClient(self.server, world.api_key) as client:

                async def inject(profile: np.ndarray) -> None:
                    await client.inject_user(profile.tolist())

                async def ask(k: int) -> list[list[int]]:
                    return [x.items for x in await client.topk_many(world.pretend_users, k)]

                for g in range(group):
                    if g:
                        await self.admin.reset_world(world.world_id)
                    out.append(
                        await policy.rollout(
                            task, budget, self.view.source_profile, inject, ask, rng, generator
                        )
                    )
            usage = await self.admin.usage(world.world_id)
            self.queries += usage.total.queries
            self.injections += usage.total.injections
        finally:
            await self.admin.delete_world(world.world_id)
        return out


def _generators(seed: int, *keys: int) -> tuple[np.random.Generator, torch.Generator]:
    """Each (purpose, update, target) its own streams: the same seed gives the same
    episodes however the concurrent attacks of a batch interleave."""
    sequence = np.random.SeedSequence([seed, *keys])
    torch_seed = int(sequence.generate_state(1, dtype=np.uint64)[0] % (2**63))
    return np.random.default_rng(sequence), torch.Generator().manual_seed(torch_seed)


async def mean_reward(
    policy: CopyAttackPolicy,
    environment: Environment,
    targets: list[int],
    budget: int,
    seed: int,
) -> float:
    """The policy's mean reward over its query rounds, one episode per target (streams
    seeded by ``seed`` and the target, so two policies meet the same first profiles)."""
    with torch.no_grad():
        groups = await asyncio.gather(
            *(environment.episodes(policy, t, 1, budget, *_generators(seed, 1, t)) for t in targets)
        )
    return float(np.mean([r for episodes in groups for e in episodes for r in e.rewards]))


async def pretrain(
    view: AttackerView,
    embeddings: SourceEmbeddings,
    tree: BalancedClusterTree,
    args: CopyAttackArgs,
    pretrain_args: PretrainArgs,
    environment: Environment,
    training_targets: list[int],
    out: Path,
    *,
    validation_targets: tuple[int, ...] | list[int] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train one policy over ``training_targets``; write ``policy-{update}.pt`` snapshots
    and ``pretrain.json`` (per update: reward, density, entropy, cost so far; per
    snapshot: the mean reward on ``validation_targets``, its queries counted too) to
    ``out``."""
    p = pretrain_args
    seed_everything(p.seed)
    policy = CopyAttackPolicy(tree, embeddings, args)
    optimiser = torch.optim.Adam(policy.parameters(), lr=args.lr)
    order = np.random.default_rng(p.seed + 1)
    batches = [
        [int(t) for t in chunk]
        for _ in range(p.passes)
        for chunk in np.array_split(
            order.permutation(training_targets), max(1, len(training_targets) // p.batch)
        )
    ]
    snapshot_at = {round(len(batches) * (s + 1) / p.snapshots) for s in range(p.snapshots)}
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = []
    started = time.perf_counter()

    async def snapshot(update: int) -> None:
        path = out / f"policy-{update:04d}.pt"
        cost = {"queries": environment.queries, "injections": environment.injections}
        save_policy(policy, path, view, args, p, update, cost, training_targets)
        validation = None
        if validation_targets:
            validation = await mean_reward(
                policy, environment, list(validation_targets), p.budget, p.seed
            )
        snapshots.append(
            {"update": update, "path": path.name, **cost, "validation_reward": validation}
        )

    await snapshot(0)
    bar = tqdm(total=len(batches), desc=f"pretrain ({p.backend})", disable=not progress)
    for update, batch in enumerate(batches, start=1):
        groups = await asyncio.gather(
            *(
                environment.episodes(
                    policy, t, p.group, p.budget, *_generators(p.seed, 0, update, t)
                )
                for t in batch
            )
        )
        losses = []
        rounds: list[float] = []
        entropies: list[float] = []
        for episodes in groups:
            returns = [discounted_returns(e.rewards, args.gamma) for e in episodes]
            baseline = _round_baselines(returns)
            for episode in episodes:
                loss = reinforce_loss(episode, baseline, args.gamma, args.entropy)
                if loss is not None:
                    losses.append(loss)
                rounds += episode.rewards
                entropies += [e.item() for e in episode.entropies]
        if losses:
            optimiser.zero_grad()
            torch.stack(losses).sum().div(len(losses)).backward()
            optimiser.step()
        history.append(
            {
                "update": update,
                **reward_summary(rounds),
                "mean_entropy": float(np.mean(entropies)) if entropies else 0.0,
                "queries": environment.queries,
                "injections": environment.injections,
            }
        )
        bar.set_postfix(reward=f"{history[-1]['mean_reward']:.3f}")
        bar.update()
        if update in snapshot_at:
            await snapshot(update)
    bar.close()
    summary = {
        "pretrain": asdict(p),
        "attack": asdict(args),
        "training_targets": training_targets,
        "validation_targets": list(validation_targets),
        "updates": len(batches),
        "seconds": round(time.perf_counter() - started, 1),
        "queries": environment.queries,
        "injections": environment.injections,
        "surrogate_queries": environment.local_queries,
        "snapshots": snapshots,
        "history": history,
    }
    write_text_atomic(out / "pretrain.json", json.dumps(summary, indent=1))
    return summary


# --- policies on disk ---------------------------------------------------------------------


def save_policy(
    policy: CopyAttackPolicy,
    path: Path,
    view: AttackerView,
    args: CopyAttackArgs,
    pretrain_args: PretrainArgs,
    update: int,
    cost: dict[str, int],
    training_targets: list[int],
) -> None:
    payload = {
        "format": POLICY_FORMAT,
        "scenario": view.fingerprint,
        "attack": asdict(args),
        "pretrain": asdict(pretrain_args),
        "update": update,
        "cost": cost,
        "training_targets": training_targets,
        "tree_depth": policy.tree.depth,
        "state": policy.state_dict(),
    }
    with staged_file(path) as staging:
        torch.save(payload, staging)


@dataclass(frozen=True)
class PretrainedPolicy:
    path: Path
    scenario: str
    attack: CopyAttackArgs
    backend: str
    update: int
    cost: dict[str, int]  # target queries and injections spent training it
    training_targets: list[int]
    state: dict[str, torch.Tensor]

    def build(self, tree: BalancedClusterTree, embeddings: SourceEmbeddings) -> CopyAttackPolicy:
        policy = CopyAttackPolicy(tree, embeddings, self.attack)
        policy.load_state_dict(self.state)
        return policy


async def copyattack_pretrained(
    ctx: AttackContext, pretrained: PretrainedPolicy, fine_tune_episodes: int
) -> dict[str, Any]:
    """Spend the budget with a pretrained policy: as it is (no query at all), or after
    ``fine_tune_episodes`` episodes on this target in its own world (the paper's loop,
    starting from the trained policy). The cell records the policy's whole training cost;
    the table shares it among its targets."""
    args = replace(pretrained.attack, episodes=fine_tune_episodes)
    policy = pretrained.build(ctx.trees(args.depth), ctx.embeddings)
    attack = CopyAttack(ctx, args, policy, query_final=fine_tune_episodes > 0)
    info = await attack.run()
    return {
        **info,
        "policy": {
            "file": pretrained.path.name,
            "backend": pretrained.backend,
            "update": pretrained.update,
            "training_queries": pretrained.cost["queries"],
            "training_injections": pretrained.cost["injections"],
        },
    }


def load_policy(path: Path, view: AttackerView) -> PretrainedPolicy:
    """A saved policy, checked against the scenario it must attack."""
    try:
        payload = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CopyAttackError(f"{path}: not a saved policy ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise CopyAttackError(f"{path}: not a saved policy of format {POLICY_FORMAT}")
    if payload["scenario"] != view.fingerprint:
        raise CopyAttackError(
            f"{path} was trained on scenario {payload['scenario'][:16]}, not "
            f"{view.fingerprint[:16]}: its targets and item ids would mean other movies"
        )
    return PretrainedPolicy(
        path=Path(path),
        scenario=payload["scenario"],
        attack=CopyAttackArgs(**payload["attack"]),
        backend=payload["pretrain"]["backend"],
        update=payload["update"],
        cost=payload["cost"],
        training_targets=payload["training_targets"],
        state=payload["state"],
    )


async def run_pretrain(
    scenario: Path,
    out: Path,
    args: CopyAttackArgs,
    pretrain_args: PretrainArgs,
    *,
    server: str | None = None,
    admin_token: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    ready_timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """``copyattack experiment pretrain``: the split, the source MF and tree (the same the
    harness builds), then :func:`pretrain` on the server or on the surrogate."""
    view = load_attacker_view(scenario)
    p = pretrain_args
    train, validation = split_targets(
        view, view.cold_targets, p.targets, p.validation_targets, p.min_holders, p.seed
    )
    embeddings = await asyncio.to_thread(
        cached_source_mf, view, SourceMFConfig(seed=0), cache_dir or out
    )
    tree = await asyncio.to_thread(BalancedClusterTree.build, embeddings.users, args.depth, 0)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "targets.json", json.dumps({"training": train, "validation": validation}, indent=1)
    )
    train_on = functools.partial(
        pretrain,
        view,
        embeddings,
        tree,
        args,
        p,
        training_targets=train,
        out=out,
        validation_targets=validation,
        progress=progress,
    )
    if p.backend == "surrogate":
        config = SurrogateConfig(pretend_users=p.pretend_users, seed=p.seed)
        return await train_on(environment=SurrogateEnvironment(view, config))
    if server is None or admin_token is None:
        raise CopyAttackError("training on the server needs --server and the admin token")
    await wait_until_ready(server, ready_timeout)
    async with AsyncAdminClient(server, admin_token, timeout=600) as admin:
        await require_served_scenario(admin, view, scenario)
        return await train_on(
            environment=ServerEnvironment(view, admin, server, p.pretend_users, p.seed)
        )
