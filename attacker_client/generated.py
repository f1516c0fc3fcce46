"""Generated-profile attacks (the classic shilling attacks), on the same interface and
budget as CopyAttack and its baselines: ``budget`` fake profiles, each holding the
target once, its other items drawn by the kind (:mod:`shared.fake_profiles`), its length
drawn from the target platform's real profile lengths so that length alone gives
nothing away.

They need what CopyAttack never gets: the target platform's statistics (its profile
lengths and item popularity, what a platform showing view counts publishes). The
experiment hands them over from the scenario (:func:`target_platform_stats`): the
strongest generated attacker, the fairest test of the paper's premise that generated
profiles are easy to tell from real ones. SegmentFake takes the target's segment from
the attacker's own source profiles (the items most often held beside the target).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from attacker_client.attack import AttackContext, AttackMethod
from shared.errors import CopyAttackError
from shared.fake_profiles import FakeKind, PlatformStats, fake_profile, segment_of
from shared.scenario import load_scenario

GENERATED: dict[str, FakeKind] = {
    "RandomFake": "random",
    "AverageFake": "average",
    "BandwagonFake": "bandwagon",
    "SegmentFake": "segment",
}


async def generated_attack(ctx: AttackContext, kind: FakeKind) -> dict[str, Any]:
    if ctx.platform is None:
        raise CopyAttackError("a generated-profile attack needs the target platform's statistics")
    # the target in the seed too: two targets of one world seed get different profiles
    rng = np.random.default_rng([ctx.seed, ctx.target])
    segment = None
    if kind == "segment":
        view = ctx.view
        segment = segment_of(ctx.target, view.source_indptr, view.source_items, view.n_items)
    for _ in range(ctx.budget):
        await ctx.inject(fake_profile(kind, ctx.target, ctx.platform, rng, segment))
    return {} if segment is None else {"segment_items": len(segment)}


def generated_method(name: str) -> AttackMethod:
    return functools.partial(generated_attack, kind=GENERATED[name])


def target_platform_stats(scenario: Path) -> PlatformStats:
    """The target platform's profile lengths and item popularity, from its training split."""
    loaded = load_scenario(scenario)
    rows = loaded.train[np.lexsort((loaded.train[:, 1], loaded.train[:, 0]))]
    indptr = np.zeros(loaded.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[:, 0], minlength=loaded.n_users), out=indptr[1:])
    return PlatformStats.of_profiles(indptr, rows[:, 1].astype(np.int64), loaded.n_items)
