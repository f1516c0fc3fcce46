"""CopyAttack (Fan et al., Section 4), top to bottom in one file.

1. Profile selection: a path from the root of the balanced clustering tree of source
   users to a leaf; every non-leaf node is an MLP over [q^B_{v*} ⊕ RNN(selected users)]
   with a softmax over its children; subtrees holding no profile with v* are masked.
   The first profile of an episode is drawn at random (the paper).
2. Profile crafting: an MLP over [p^B_i ⊕ q^B_{v*}] picks a window w in 10%..100%; the
   chronological profile is cut to that share around v*.
3. Injection and reward: every ``query_every`` injections the attacker asks the top-k of
   each pretend user (concurrently) and scores Eq. (1): the share of pretend users with
   v* in their top-k (``reward="hit"``), or, where that is too sparse to learn from, the
   rank of v* inside the returned lists (``reward="rank"``: (k - position) / k).
4. Learning: REINFORCE on both policies (discount 0.6 over query rounds, Adam 0.001), a
   running-mean baseline; an episode ends at the budget or when every pretend user has
   v* in its top-k.

Episodes (default ``reset``): the world is reset between training episodes through the
admin API; the final result comes from one more spend of the budget by the learned
policy in the reset world. ``online``: one world, no resets, the last episode's state is
the result (the stricter black-box reading). The ablations of the paper are flags:
PolicyNetwork (``depth=1``: one flat policy over all source users), CopyAttack-Length
(``crafting=False``), CopyAttack-Masking (``masking=False, crafting=False``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from attacker_client.attack import AttackContext
from attacker_client.source_mf import SourceEmbeddings
from attacker_client.tree import BalancedClusterTree
from shared.options import option
from shared.profiles import WINDOW_SHARES, crop_around_target


@dataclass(frozen=True)
class CopyAttackArgs:
    episodes: int = option(8, "training episodes per target (pretrained: fine-tune episodes)")
    query_every: int = option(3, "injections between reward rounds")
    k: int = option(20, "top-k of the reward, asked per pretend user (up to the server's max_k)")
    reward: Literal["hit", "rank"] = option(
        "hit", "hit: the target in a top-k; rank: (k - position) / k"
    )
    depth: int = option(
        3, "clustering tree depth (paper: 3 for Flixster, 6 for Netflix; PolicyNetwork: 1)"
    )
    masking: bool = option(
        True, "mask subtrees holding no profile with the target (the ablations set their own)"
    )
    crafting: bool = option(
        True, "cut each copy to a learned window around the target (the ablations set their own)"
    )
    hidden: int = option(32, "hidden units of each policy MLP")
    lr: float = option(0.001, "Adam step size")
    gamma: float = option(0.6, "discount of the reward over query rounds")
    online: bool = option(False, "no world resets")
    entropy: float = option(0.0, "weight of the policies' entropy bonus (0: the paper)")
    # None: uniform over W, the paper; the fixed-share baselines show whole profiles push
    # hardest on some victims, and a uniform start spends the first episodes cutting
    # profiles to half on average
    crafting_prior: float | None = option(
        None,
        "the window share crafting starts preferring, of 0.1 .. 1.0 (default: uniform)",
        choices=WINDOW_SHARES,
        metavar="SHARE",
    )


# --- policies ---------------------------------------------------------------------------


class SelectionPolicy(nn.Module):
    """One MLP per non-leaf node (stored as stacked weights), a shared GRU summarising the
    users selected so far."""

    def __init__(self, tree: BalancedClusterTree, dim: int, hidden: int) -> None:
        super().__init__()
        self.tree = tree
        width = max(len(children) for children in tree.children)
        n = tree.n_nodes
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.w1 = nn.Parameter(torch.randn(n, 2 * dim, hidden) * 0.1)
        self.b1 = nn.Parameter(torch.zeros(n, hidden))
        self.w2 = nn.Parameter(torch.randn(n, hidden, width) * 0.1)
        self.b2 = nn.Parameter(torch.zeros(n, width))

    def state(self, target_vector: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """[q_{v*} ⊕ x], x the GRU's last output over the selected users' p^B (zero first)."""
        if len(selected) == 0:
            summary = torch.zeros_like(target_vector)
        else:
            summary = self.rnn(selected.unsqueeze(0))[1][0, 0]
        return torch.cat([target_vector, summary])

    def sample(
        self,
        state: torch.Tensor,
        node_allowed: np.ndarray,
        leaf_allowed: np.ndarray,
        generator: torch.Generator,
    ) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A leaf position, the log-probability of its path and the entropy of its choices."""
        tree, node, log_prob, entropy = self.tree, 0, torch.zeros(()), torch.zeros(())
        while True:
            children = tree.children[node]
            hidden = torch.relu(state @ self.w1[node] + self.b1[node])
            logits = (hidden @ self.w2[node] + self.b2[node])[: len(children)]
            last = tree.level[node] == tree.depth - 1
            allowed = leaf_allowed[children] if last else node_allowed[children]
            logits = logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))
            log_probs = torch.log_softmax(logits, dim=0)
            choice = int(torch.multinomial(log_probs.exp(), 1, generator=generator))
            log_prob = log_prob + log_probs[choice]
            entropy = entropy + _entropy(log_probs)
            if last:
                return int(children[choice]), log_prob, entropy
            node = int(children[choice])


# the prior share's logit bonus: with 10 shares, e^3 / (e^3 + 9) = 0.69 of the mass at
# the start, leaving every other share tried now and then
PRIOR_LOGIT = 3.0


class CraftingPolicy(nn.Module):
    def __init__(self, dim: int, hidden: int, prior: float | None = None) -> None:
        super().__init__()
        logits = nn.Linear(hidden, len(WINDOW_SHARES))
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), logits)
        if prior is not None:
            if prior not in WINDOW_SHARES:
                raise ValueError(f"crafting prior {prior} is not one of {WINDOW_SHARES}")
            with torch.no_grad():
                logits.bias[WINDOW_SHARES.index(prior)] += PRIOR_LOGIT

    def sample(
        self, user_vector: torch.Tensor, target_vector: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """A window share, its log-probability and the entropy of the choice."""
        log_probs = torch.log_softmax(self.mlp(torch.cat([user_vector, target_vector])), dim=0)
        choice = int(torch.multinomial(log_probs.exp(), 1, generator=generator))
        return WINDOW_SHARES[choice], log_probs[choice], _entropy(log_probs)


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Of a categorical given its log-probabilities (masked choices: -inf, weight 0)."""
    finite = torch.isfinite(log_probs)
    return -(log_probs[finite].exp() * log_probs[finite]).sum()


# --- reward -----------------------------------------------------------------------------


def reward_of(lists: list[list[int]], target: int, k: int, kind: str) -> float:
    """Eq. (1) over the pretend users' lists: hits in the top-k, or rank-weighted hits."""
    scores = []
    for items in lists:
        position = items.index(target) if target in items[:k] else None
        if position is None:
            scores.append(0.0)
        else:
            scores.append(1.0 if kind == "hit" else (k - position) / k)
    return float(np.mean(scores)) if scores else 0.0


def discounted_returns(rewards: list[float], gamma: float) -> list[float]:
    out, running = [], 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        out.append(running)
    return out[::-1]


# --- one episode, in any environment -----------------------------------------------------

Inject = Callable[[np.ndarray], Awaitable[None]]
# the pretend users' top-k lists at this k: the server's, or a local surrogate's
AskTopK = Callable[[int], Awaitable[list[list[int]]]]


@dataclass
class Episode:
    log_probs: list[torch.Tensor]  # one per learned action (the first profile is random)
    entropies: list[torch.Tensor]  # the entropy of each learned action's choices
    action_round: list[int]  # the query round each learned action belongs to
    rewards: list[float]  # one per query round
    lengths: list[int]  # items per injected profile
    queries: int


@dataclass(frozen=True)
class TargetTask:
    """What the policies need of one target: its q^B_v* and its masks over the tree."""

    target: int
    vector: torch.Tensor
    node_allowed: np.ndarray
    leaf_allowed: np.ndarray


class CopyAttackPolicy(nn.Module):
    """The selection and crafting policies over one clustering tree. The state holds the
    target (q^B_v*), so one policy serves every target: per target (the paper), or
    trained across many (``attacker_client/pretrain.py``)."""

    def __init__(
        self, tree: BalancedClusterTree, embeddings: SourceEmbeddings, args: CopyAttackArgs
    ):
        super().__init__()
        self.tree, self.args = tree, args
        self.user_vectors = torch.from_numpy(embeddings.users)
        self.item_vectors = torch.from_numpy(embeddings.items)
        dim = embeddings.users.shape[1]
        self.selection = SelectionPolicy(tree, dim, args.hidden)
        self.crafting = CraftingPolicy(dim, args.hidden, args.crafting_prior)

    def task(self, target: int, holders: np.ndarray) -> TargetTask:
        allowed = holders if self.args.masking else np.arange(self.tree.n_users)
        # masking: a node is allowed when some leaf below holds the target
        return TargetTask(
            target=target,
            vector=self.item_vectors[target],
            node_allowed=self.tree.holding(allowed) > 0,
            leaf_allowed=self.tree.leaf_mask(allowed),
        )

    async def rollout(
        self,
        task: TargetTask,
        budget: int,
        profile_of: Callable[[int], np.ndarray],
        inject: Inject,
        ask: AskTopK | None,
        rng: np.random.Generator,
        generator: torch.Generator,
    ) -> Episode:
        """One spend of ``budget`` profiles. With ``ask`` the pretend users are asked every
        ``query_every`` injections (the reward, and an early stop once every one has v*);
        without it nothing is asked: a pretrained policy's final spend."""
        args = self.args
        episode = Episode([], [], [], [], [], 0)
        selected: list[int] = []
        for t in range(budget):
            log_prob: torch.Tensor | None = None
            entropy = torch.zeros(())
            if t == 0:  # the paper seeds each episode with a random allowed profile
                leaf = int(rng.choice(np.flatnonzero(task.leaf_allowed)))
            else:
                state = self.selection.state(task.vector, self.user_vectors[selected])
                leaf, log_prob, entropy = self.selection.sample(
                    state, task.node_allowed, task.leaf_allowed, generator
                )
            user = int(self.tree.order[leaf])
            profile = profile_of(user)
            if args.crafting and task.target in profile:
                share, craft_log_prob, craft_entropy = self.crafting.sample(
                    self.user_vectors[user], task.vector, generator
                )
                profile = crop_around_target(profile, task.target, share)
                log_prob = craft_log_prob if log_prob is None else log_prob + craft_log_prob
                entropy = entropy + craft_entropy
            if log_prob is not None:
                episode.log_probs.append(log_prob)
                episode.entropies.append(entropy)
                episode.action_round.append(len(episode.rewards))
            selected.append(user)
            episode.lengths.append(len(profile))
            await inject(profile)
            if ask is not None and ((t + 1) % args.query_every == 0 or t + 1 == budget):
                lists = await ask(args.k)
                episode.queries += len(lists)
                episode.rewards.append(reward_of(lists, task.target, args.k, args.reward))
                if reward_of(lists, task.target, args.k, "hit") == 1.0:
                    break  # every pretend user already has v*
        return episode


def reinforce_loss(
    episode: Episode, baseline: float | list[float], gamma: float, entropy: float
) -> torch.Tensor | None:
    """REINFORCE: each action is credited with the discounted return from its round, less
    a baseline (one number, or one per round), minus an entropy bonus."""
    if not episode.log_probs:
        return None
    returns = discounted_returns(episode.rewards, gamma)
    credit = torch.tensor([returns[r] for r in episode.action_round])
    if isinstance(baseline, list):
        base = torch.tensor([baseline[r] for r in episode.action_round])
    else:
        base = torch.full_like(credit, baseline)
    loss = -(torch.stack(episode.log_probs) * (credit - base)).sum()
    return loss - entropy * torch.stack(episode.entropies).sum()


def seed_everything(seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """The network initialisation, the random first profiles and the sampled actions."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed)


def reward_summary(rounds: list[float]) -> dict[str, Any]:
    if not rounds:  # nothing asked (a pretrained policy spent as it is): no density at all
        return {"reward_rounds": 0}
    return {
        "reward_rounds": len(rounds),
        "reward_density": float(np.mean([r > 0 for r in rounds])),
        "mean_reward": float(np.mean(rounds)),
    }


# --- the paper's per-target attack ------------------------------------------------------


class CopyAttack:
    """Learn a policy for one target in its own world, then spend the budget with it."""

    def __init__(
        self,
        ctx: AttackContext,
        args: CopyAttackArgs,
        policy: CopyAttackPolicy | None = None,
        *,
        query_final: bool = True,
    ) -> None:
        """``policy``: start from a trained one (default: a new one); ``query_final=False``:
        the final spend asks nothing (a pretrained policy used as it is)."""
        self.ctx, self.args, self.query_final = ctx, args, query_final
        self.rng, self.generator = seed_everything(ctx.seed)
        self.policy = policy or CopyAttackPolicy(ctx.trees(args.depth), ctx.embeddings, args)
        self.task = self.policy.task(ctx.target, ctx.holders)
        self.optimiser = torch.optim.Adam(self.policy.parameters(), lr=args.lr)
        self.baseline: float | None = None

    async def _ask(self, k: int) -> list[list[int]]:
        ctx = self.ctx
        return [x.items for x in await ctx.client.topk_many(ctx.world.pretend_users, k)]

    async def _inject_training(self, profile: np.ndarray) -> None:
        await self.ctx.client.inject_user(profile.tolist())

    async def run_episode(self, final: bool) -> Episode:
        ctx = self.ctx
        return await self.policy.rollout(
            self.task,
            ctx.budget,
            ctx.view.source_profile,
            ctx.inject if final else self._inject_training,
            self._ask if self.query_final or not final else None,
            self.rng,
            self.generator,
        )

    def update(self, episode: Episode) -> float:
        """One REINFORCE step against a running mean of the credit."""
        if not episode.log_probs:
            return 0.0
        returns = discounted_returns(episode.rewards, self.args.gamma)
        # the mean of the float32 credit, as before the policy moved out of this class
        mean = torch.tensor([returns[r] for r in episode.action_round]).mean().item()
        baseline = mean if self.baseline is None else self.baseline
        loss = reinforce_loss(episode, baseline, self.args.gamma, self.args.entropy)
        assert loss is not None
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.baseline = mean if self.baseline is None else 0.8 * self.baseline + 0.2 * mean
        return float(loss.item())

    async def run(self) -> dict[str, Any]:
        ctx, args = self.ctx, self.args
        per_episode: list[list[float]] = []
        queries = injections = 0
        for _ in range(args.episodes):
            episode = await self.run_episode(final=False)
            self.update(episode)
            per_episode.append(episode.rewards)
            queries += episode.queries
            injections += len(episode.lengths)
            if not args.online:
                await ctx.admin.reset_world(ctx.world.world_id)
        final = await self.run_episode(final=True)
        rounds = [reward for rewards in [*per_episode, final.rewards] for reward in rewards]
        return {
            "args": asdict(args),
            "training_episodes": args.episodes,
            "training_queries": queries + final.queries,
            "training_injections": injections,
            **reward_summary(rounds),
            "episode_rewards": per_episode,  # per query round, each training episode
            "final_rewards": final.rewards,  # per query round, the final spend
        }


async def copyattack(ctx: AttackContext, args: CopyAttackArgs = CopyAttackArgs()) -> dict[str, Any]:
    return await CopyAttack(ctx, args).run()
