"""CopyAttack trained across targets: the train/validation/evaluated split, learning on a
small fixed problem, the server's count of what training cost, the surrogate's zero
queries, and the harness's pretrained methods."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attacker_client._client import AsyncAdminClient
from attacker_client.copyattack import CopyAttackArgs
from attacker_client.harness import ExperimentConfig, run_learning_curve, run_table2
from attacker_client.pretrain import (
    PretrainArgs,
    ServerEnvironment,
    SurrogateEnvironment,
    load_policy,
    mean_reward,
    pretrain,
    split_targets,
)
from attacker_client.results import read_cells
from attacker_client.source_mf import SourceMFConfig, fit_source_mf
from attacker_client.surrogate import CooccurrenceSurrogate, SurrogateConfig
from attacker_client.tree import BalancedClusterTree
from shared.errors import CopyAttackError
from shared.process import ServerProcess
from shared.scenario import AttackerView, load_attacker_view
from tests.service_fixtures import ADMIN_TOKEN


@pytest.fixture(scope="module")
def view(scenario_dir: Path) -> AttackerView:
    return load_attacker_view(scenario_dir)


@pytest.fixture(scope="module")
def parts(view: AttackerView) -> tuple:
    embeddings = fit_source_mf(view, SourceMFConfig(seed=0))
    return embeddings, BalancedClusterTree.build(embeddings.users, 2, seed=0)


def test_training_targets_are_disjoint_from_the_evaluated_and_deterministic(
    view: AttackerView,
) -> None:
    train, validation = split_targets(view, view.cold_targets, 20, 8, 1, seed=0)
    assert (train, validation) == split_targets(view, view.cold_targets, 20, 8, 1, seed=0)
    assert len(train) == 20 and len(validation) == 8
    assert not set(train) & set(validation)
    assert not (set(train) | set(validation)) & set(view.cold_targets)
    assert set(train) | set(validation) <= set(view.cold_pool)
    assert split_targets(view, view.cold_targets, 20, 8, 1, seed=1) != (train, validation)
    holders = view.holder_counts()
    rich, _ = split_targets(view, view.cold_targets, 5, 0, 4, seed=0)
    assert all(holders[t] >= 4 for t in rich)
    available = len(set(view.cold_pool) - set(view.cold_targets))
    with pytest.raises(CopyAttackError, match="cold pool holds"):
        split_targets(view, view.cold_targets, available, 1, 1, seed=0)


def test_surrogate_answers_like_a_world(view: AttackerView) -> None:
    """Top-k of items a pretend user does not hold, best first; an injection of the
    target beside a pretend user's items raises the target for that user."""
    surrogate = CooccurrenceSurrogate(view, SurrogateConfig(pretend_users=10))
    target = view.cold_targets[0]
    world = surrogate.world(target)
    lists = world.topk(20)
    assert len(lists) == len(world.users) == 10 and all(len(x) == 20 for x in lists)
    first_user = surrogate.pretend[world.users[0]]
    held = set(view.source_profile(int(first_user)).tolist())
    assert not held & set(lists[0])
    ranked = world.topk(100)[0]
    before = ranked.index(target) if target in ranked else 100
    for _ in range(5):
        world.inject(np.array([*sorted(held)[:5], target]))
    ranked = world.topk(100)[0]
    assert target in ranked and ranked.index(target) < before
    assert world.queries == 30


def test_a_policy_trained_across_targets_beats_its_untrained_self(
    view: AttackerView, parts: tuple, tmp_path: Path
) -> None:
    """A small fixed problem: 4 training targets of the tiny pair, on the attacker's
    surrogate (offline and deterministic); the trained policy's mean reward on those
    targets, from the same seeded first profiles, must clearly exceed the untrained one's."""
    embeddings, tree = parts
    args = CopyAttackArgs(k=50, reward="rank", depth=2, lr=0.05)
    p = PretrainArgs(
        backend="surrogate",
        targets=4,
        validation_targets=0,
        passes=10,
        group=4,
        batch=4,
        snapshots=1,
        budget=6,
        pretend_users=10,
    )
    train, _ = split_targets(view, view.cold_targets, 4, 0, 1, seed=0)
    environment = SurrogateEnvironment(view, SurrogateConfig(pretend_users=10))
    summary = asyncio.run(
        pretrain(view, embeddings, tree, args, p, environment, train, tmp_path, progress=False)
    )
    assert [s["update"] for s in summary["snapshots"]] == [0, 10]
    assert summary["queries"] == summary["injections"] == 0  # nothing reached the target
    untrained = load_policy(tmp_path / "policy-0000.pt", view).build(tree, embeddings)
    trained = load_policy(tmp_path / "policy-0010.pt", view).build(tree, embeddings)
    for seed in (100, 101):
        before = asyncio.run(mean_reward(untrained, environment, train, 6, seed))
        after = asyncio.run(mean_reward(trained, environment, train, 6, seed))
        assert after > before + 0.05, (seed, before, after)


def test_training_on_the_server_is_counted_by_the_server_and_seeded(
    view: AttackerView, parts: tuple, server: ServerProcess, tmp_path: Path
) -> None:
    embeddings, tree = parts
    args = CopyAttackArgs(k=20, reward="rank", depth=2)
    p = PretrainArgs(
        targets=2,
        validation_targets=1,
        passes=1,
        group=2,
        batch=2,
        snapshots=1,
        budget=3,
        pretend_users=5,
    )
    train, validation = split_targets(view, view.cold_targets, 2, 1, 1, seed=0)

    async def run(out: Path) -> dict:
        async with AsyncAdminClient(server.url, ADMIN_TOKEN) as admin:
            environment = ServerEnvironment(view, admin, server.url, 5, 0)
            summary = await pretrain(
                view,
                embeddings,
                tree,
                args,
                p,
                environment,
                train,
                out,
                validation_targets=validation,
                progress=False,
            )
            assert not await admin.list_worlds()  # every training world deleted
            return summary

    first = asyncio.run(run(tmp_path / "a"))
    # 2 targets x 2 episodes of 3 profiles, one query round of 5 pretend users each, and
    # one validation episode per snapshot (2 snapshots): all counted by the server
    assert first["injections"] == (2 * 2 + 2) * 3
    assert first["queries"] == (2 * 2 + 2) * 5
    # a snapshot carries the cost of making it; its own validation episode comes after
    assert first["snapshots"][-1]["queries"] == first["queries"] - 5
    second = asyncio.run(run(tmp_path / "b"))
    assert second["history"] == first["history"]
    for name in ("policy-0000.pt", "policy-0001.pt"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)["state"]
        b = torch.load(tmp_path / "b" / name, weights_only=True)["state"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_surrogate_policy_attacks_with_no_query_before_its_first_injection(
    view: AttackerView, parts: tuple, scenario_dir: Path, server: ServerProcess, tmp_path: Path
) -> None:
    embeddings, _ = parts
    args = CopyAttackArgs(k=20, reward="rank", depth=3, episodes=1)
    p = PretrainArgs(
        backend="surrogate",
        targets=3,
        validation_targets=0,
        passes=1,
        group=2,
        batch=3,
        snapshots=1,
        budget=4,
        pretend_users=10,
    )
    train, _ = split_targets(view, view.cold_targets, 3, 0, 1, seed=0)
    tree3 = BalancedClusterTree.build(embeddings.users, 3, seed=0)  # the harness's tree
    environment = SurrogateEnvironment(view, SurrogateConfig(pretend_users=10))
    asyncio.run(
        pretrain(
            view, embeddings, tree3, args, p, environment, train, tmp_path / "p", progress=False
        )
    )
    config = ExperimentConfig(
        server=server.url,
        admin_token=ADMIN_TOKEN,
        scenario=scenario_dir,
        out=tmp_path / "t2",
        methods=(
            "WithoutAttack",
            "TargetAttack100",
            "CopyAttack-Surrogate",
            "CopyAttack-Surrogate+FT",
        ),
        targets=2,
        budget=6,
        pretend_users=5,
        checkpoint_every=3,
        attack=args,
        policies={"surrogate": tmp_path / "p" / "policy-0001.pt"},
    )
    summary = asyncio.run(run_table2(config))
    cells = {c.method: c for c in read_cells(tmp_path / "t2" / "cells.jsonl")}
    # as it is: the server counted the 6 injections and not one query (its usage endpoint)
    assert cells["CopyAttack-Surrogate"].queries == 0
    assert cells["CopyAttack-Surrogate"].injections == 6
    assert cells["CopyAttack-Surrogate"].info["policy"]["training_queries"] == 0
    # it asked nothing, so it has no reward density (not a density of 0)
    assert summary.methods["CopyAttack-Surrogate"].reward_density is None
    density = summary.methods["CopyAttack-Surrogate+FT"].reward_density
    assert density is not None and 0 <= density <= 1
    # fine-tuned: one episode and the final spend, each asking after every 3 profiles
    assert cells["CopyAttack-Surrogate+FT"].queries == 2 * 2 * 5
    learners = {t.learner for t in summary.paired_tests}
    assert learners == {"CopyAttack-Surrogate", "CopyAttack-Surrogate+FT"}
    assert all(t.best_other in ("WithoutAttack", "TargetAttack100") for t in summary.paired_tests)
    # its learning curve: each snapshot spent as it is, beside the table's methods
    snapshots = asyncio.run(
        run_learning_curve(
            dataclasses.replace(config, out=tmp_path / "curve"),
            tmp_path / "p",
            tmp_path / "t2" / "table2.json",
        )
    )
    written = json.loads((tmp_path / "p" / "pretrain.json").read_text())["snapshots"]
    assert [s.update for s in snapshots] == [s["update"] for s in written]
    assert all(s.training_queries == 0 for s in snapshots)  # the surrogate's
    lines = (tmp_path / "curve" / "learning_curve.csv").read_text().splitlines()
    assert lines[0] == "update,training_queries,training_injections,HR@20,ci95"
    assert len(lines) == 1 + len(snapshots)
    assert (tmp_path / "curve" / "learning_curve.png").stat().st_size > 0
    # a policy is refused where it does not belong
    with pytest.raises(CopyAttackError, match="need --surrogate-policy"):
        asyncio.run(run_table2(dataclasses.replace(config, policies={}, out=tmp_path / "x")))
    policy = torch.load(tmp_path / "p" / "policy-0001.pt", weights_only=True)
    policy["training_targets"] = view.cold_targets  # as if trained on every evaluated one
    torch.save(policy, tmp_path / "bad.pt")
    with pytest.raises(CopyAttackError, match="trained on evaluated targets"):
        asyncio.run(
            run_table2(
                dataclasses.replace(
                    config, policies={"surrogate": tmp_path / "bad.pt"}, out=tmp_path / "y"
                )
            )
        )
    other = dataclasses.replace(view, fingerprint="f" * 64)
    with pytest.raises(CopyAttackError, match="trained on scenario"):
        load_policy(tmp_path / "p" / "policy-0001.pt", other)


def test_a_group_of_one_episode_is_refused_it_would_learn_nothing() -> None:
    with pytest.raises(ValueError, match="group must be at least 2"):
        PretrainArgs(group=1)
