"""The paper's baselines that do not learn (Section 5.1.4), on the same interface and
budget as CopyAttack: WithoutAttack, RandomAttack, TargetAttack40/70/100. The learning
baselines (PolicyNetwork, CopyAttack-Masking, CopyAttack-Length) are CopyAttack with a
part switched off, in :mod:`attacker_client.copyattack`."""

from __future__ import annotations

from typing import Any

import numpy as np

from attacker_client.attack import AttackContext
from shared.profiles import crop_around_target


async def without_attack(ctx: AttackContext) -> dict[str, Any]:
    """Inject nothing: the clean model's numbers, measured the same way."""
    return {}


async def random_attack(ctx: AttackContext) -> dict[str, Any]:
    """``budget`` source profiles drawn uniformly, copied whole."""
    rng = np.random.default_rng(ctx.seed)
    for user in rng.choice(ctx.view.n_source_users, ctx.budget, replace=False):
        await ctx.inject(ctx.view.source_profile(int(user)))
    return {}


async def target_attack(ctx: AttackContext, share: float) -> dict[str, Any]:
    """``budget`` source profiles holding the target, drawn uniformly (with replacement
    only when fewer hold it), each cut to ``share`` of its length around the target."""
    rng = np.random.default_rng(ctx.seed)
    holders = ctx.holders
    chosen = rng.choice(holders, ctx.budget, replace=len(holders) < ctx.budget)
    for user in chosen:
        profile = ctx.view.source_profile(int(user))
        await ctx.inject(crop_around_target(profile, ctx.target, share))
    return {"source_holders": len(holders)}
