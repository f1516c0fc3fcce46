"""CopyAttack's parts: the balanced clustering tree and its masking, the policies and
their REINFORCE gradients, the reward, and the source-domain MF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attacker_client.copyattack import (
    CraftingPolicy,
    SelectionPolicy,
    discounted_returns,
    reward_of,
)
from attacker_client.source_mf import SourceMFConfig, fit_source_mf
from attacker_client.tree import BalancedClusterTree, branching_for
from shared.scenario import AttackerView


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), depth=st.integers(1, 4), seed=st.integers(0, 100))
def test_tree_is_balanced_within_its_depth_bound(n: int, depth: int, seed: int) -> None:
    vectors = np.random.default_rng(seed).normal(size=(n, 4))
    tree = BalancedClusterTree.build(vectors, depth, seed=seed)
    c = tree.branching
    assert n <= c**depth
    if n > 1:  # the smallest branching >= 2 that holds every user in `depth` levels
        assert c == 2 or (c - 1) ** depth < n
    assert sorted(tree.order.tolist()) == list(range(n))  # every user is one leaf
    for node in range(tree.n_nodes):
        children = tree.children[node]
        assert 1 <= len(children) <= c
        if tree.level[node] < depth - 1:
            sizes = [tree.end[k] - tree.start[k] for k in children]
            assert max(sizes) - min(sizes) <= 1  # siblings differ by at most one
            assert tree.start[children[0]] == tree.start[node]
            assert tree.end[children[-1]] == tree.end[node]
        else:
            assert children.tolist() == list(range(tree.start[node], tree.end[node]))
    assert tree.level.max() == depth - 1


def test_branching_bound() -> None:
    assert branching_for(609, 3) == 9  # 8^3 = 512 < 609 <= 729
    # 2^4 = 16 < 17 <= 3^4 although 3^3 = 27 > 17: not every n has c^(d-1) < n
    assert branching_for(17, 4) == 3
    assert branching_for(12_221, 3) == 24
    assert branching_for(8, 3) == 2 and branching_for(9, 3) == 3
    assert branching_for(5, 1) == 5


def test_clusters_group_similar_users() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0], [-10, 0], [0, 10], [0, -10]])
    vectors = np.concatenate([c + rng.normal(size=(4, 2)) for c in centres])
    tree = BalancedClusterTree.build(vectors, 2, seed=0)  # c = 4: 4 clusters of 4
    for node in tree.children[0]:
        members = tree.order[tree.start[node] : tree.end[node]]
        assert len(set((members // 4).tolist())) == 1  # one blob per cluster


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), holders=st.integers(1, 6))
def test_masking_never_selects_a_masked_leaf(seed: int, holders: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(80, 4))
    tree = BalancedClusterTree.build(vectors, 3, seed=seed)
    holding = rng.choice(80, holders, replace=False)
    node_allowed = tree.holding(holding) > 0
    leaf_allowed = tree.leaf_mask(holding)
    assert node_allowed[0]  # the target is in the source domain: never fully masked
    policy = SelectionPolicy(tree, dim=4, hidden=8)
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn(8)
    for _ in range(20):
        leaf, log_prob, _ = policy.sample(state, node_allowed, leaf_allowed, generator)
        assert tree.order[leaf] in set(holding.tolist())
        assert torch.isfinite(log_prob)


def test_reinforce_improves_selection_and_crafting_on_a_tiny_problem() -> None:
    """A bandit: the reward is 1 only for one leaf and one window; REINFORCE with the
    agent's policies must move probability onto them."""
    torch.manual_seed(0)
    vectors = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    tree = BalancedClusterTree.build(vectors, 2, seed=0)
    selection = SelectionPolicy(tree, dim=4, hidden=16)
    crafting = CraftingPolicy(dim=4, hidden=16)
    optimiser = torch.optim.Adam([*selection.parameters(), *crafting.parameters()], lr=0.05)
    allowed_nodes = np.ones(tree.n_nodes, dtype=bool)
    allowed_leaves = np.ones(16, dtype=bool)
    good_leaf, good_share = 5, 0.3
    target = torch.zeros(4)
    user = torch.from_numpy(vectors[0])
    generator = torch.Generator().manual_seed(0)

    def success_rate(n: int = 300) -> float:
        state = selection.state(target, torch.zeros(0, 4))
        with torch.no_grad():
            wins = 0
            for _ in range(n):
                leaf, _, _ = selection.sample(state, allowed_nodes, allowed_leaves, generator)
                share, _, _ = crafting.sample(user, target, generator)
                wins += leaf == good_leaf and share == good_share
        return wins / n

    before = success_rate()
    for _ in range(600):
        state = selection.state(target, torch.zeros(0, 4))
        leaf, log_leaf, _ = selection.sample(state, allowed_nodes, allowed_leaves, generator)
        share, log_share, _ = crafting.sample(user, target, generator)
        reward = float(leaf == good_leaf) + float(share == good_share)
        loss = -(log_leaf + log_share) * (reward - 0.2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = success_rate()
    assert before < 0.05 and after > 0.5, (before, after)


def test_reward_and_returns() -> None:
    lists = [[3, 7, 9], [9, 1, 2], [4, 5, 6]]
    assert reward_of(lists, 9, 3, "hit") == pytest.approx(2 / 3)
    assert reward_of(lists, 9, 2, "hit") == pytest.approx(1 / 3)  # only the top-2 count
    assert reward_of(lists, 9, 3, "rank") == pytest.approx((1 / 3 + 3 / 3) / 3)
    assert reward_of([], 9, 3, "hit") == 0.0
    assert discounted_returns([1.0, 0.0, 2.0], 0.5) == [1.5, 1.0, 2.0]


def test_source_mf_puts_co_held_items_together() -> None:
    # two groups of users, each holding its own block of items
    profiles = [list(range(0, 10)) if u < 20 else list(range(10, 20)) for u in range(40)]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in profiles])])
    items = np.concatenate(profiles)
    view = AttackerView("x", indptr, items, np.zeros(len(items)), [], {}, [], n_items=25)
    embeddings = fit_source_mf(view, SourceMFConfig(epochs=60, seed=0))
    assert embeddings.users.shape == (40, 8) and embeddings.items.shape == (25, 8)
    assert not embeddings.items[20:].any()  # items no source user holds stay zero
    user = embeddings.users[0]
    own, other = embeddings.items[:10] @ user, embeddings.items[10:20] @ user
    assert own.mean() > other.mean()


def test_source_mf_is_cached_per_profiles_and_settings(tmp_path, monkeypatch) -> None:
    from attacker_client import source_mf

    profiles = [[u % 7, (u + 1) % 7, 7 + u % 3] for u in range(30)]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in profiles])])
    items = np.concatenate(profiles)
    view = AttackerView("view-a", indptr, items, np.zeros(len(items)), [], {}, [], n_items=12)
    config = SourceMFConfig(epochs=2, seed=0)
    first = source_mf.cached_source_mf(view, config, tmp_path)
    assert len(list(tmp_path.glob("source_mf-*.npz"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again although cached")

    with monkeypatch.context() as patch:
        patch.setattr(source_mf, "fit_source_mf", no_fit)
        again = source_mf.cached_source_mf(view, config, tmp_path)
    np.testing.assert_array_equal(first.users, again.users)
    np.testing.assert_array_equal(first.items, again.items)
    # other settings or other profiles are other entries
    source_mf.cached_source_mf(view, SourceMFConfig(epochs=2, seed=1), tmp_path)
    other = AttackerView("view-b", indptr, items, np.zeros(len(items)), [], {}, [], n_items=12)
    source_mf.cached_source_mf(other, config, tmp_path)
    assert len(list(tmp_path.glob("source_mf-*.npz"))) == 3
    # a torn or foreign file is refitted and replaced, not trusted
    for path in tmp_path.glob("source_mf-*.npz"):
        path.write_bytes(b"torn")
    refit = source_mf.cached_source_mf(view, config, tmp_path)
    np.testing.assert_array_equal(first.users, refit.users)


def test_crafting_prior_starts_on_its_share_and_leaves_the_others_reachable() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(50, 2, 4)
    uniform, prior = CraftingPolicy(4, 16), CraftingPolicy(4, 16, prior=1.0)
    with torch.no_grad():
        shares = {
            name: [policy.sample(u, t, generator)[0] for u, t in vectors]
            for name, policy in (("uniform", uniform), ("prior", prior))
        }
    whole = {name: np.mean([s == 1.0 for s in drawn]) for name, drawn in shares.items()}
    assert whole["uniform"] < 0.3 and whole["prior"] > 0.5, whole
    assert len(set(shares["prior"])) > 1  # the other shares are still tried
    with pytest.raises(ValueError, match=r"0\.95 is not one of"):
        CraftingPolicy(4, 16, prior=0.95)
