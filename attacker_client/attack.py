"""What every attack method gets and gives back: one target item, one world reached only
through the SDK, the attacker's own data (source profiles and their MF embeddings), and
a budget of profiles. The final spend of the budget goes through :meth:`AttackContext.
inject`, which counts it and lets the harness evaluate checkpoints (the budget curve)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacker_client._client import AsyncAdminClient, AsyncClient
from attacker_client.source_mf import SourceEmbeddings
from attacker_client.tree import BalancedClusterTree
from shared.errors import CopyAttackError
from shared.fake_profiles import PlatformStats
from shared.scenario import AttackerView
from shared.schemas import ModelInfo, WorldCreated


@dataclass
class AttackContext:
    client: AsyncClient
    admin: AsyncAdminClient
    world: WorldCreated
    view: AttackerView
    embeddings: SourceEmbeddings
    trees: Callable[[int], BalancedClusterTree]  # depth -> the tree (built once, cached)
    target: int
    budget: int
    seed: int
    # called after each injection of the final spend with the number injected so far
    on_injected: Callable[[int], Awaitable[None]] | None = None
    injected_lengths: list[int] = field(default_factory=list)
    # the target platform's statistics, for the generated-profile attacks only
    platform: PlatformStats | None = None

    @property
    def holders(self) -> np.ndarray:
        """Source users whose profile holds the target item."""
        return self.view.holders(self.target)

    async def inject(self, profile: np.ndarray) -> None:
        """Inject one profile of the final spend."""
        await self.client.inject_user(profile.tolist())
        self.injected_lengths.append(len(profile))
        if self.on_injected is not None:
            await self.on_injected(len(self.injected_lengths))


async def require_served_scenario(
    admin: AsyncAdminClient, view: AttackerView, folder: Path
) -> None:
    """Refuse a server whose model was trained on another scenario than the view's."""
    require_scenario_of(await admin.model_info(), view, folder)


def require_scenario_of(model: ModelInfo, view: AttackerView, folder: Path) -> None:
    """Refuse a model trained on another scenario than the view's."""
    if model.scenario_fingerprint != view.fingerprint:
        raise CopyAttackError(
            f"the server serves scenario {model.scenario_fingerprint[:16]}, not "
            f"{folder} ({view.fingerprint[:16]}): item ids would mean other movies"
        )


AttackMethod = Callable[[AttackContext], Awaitable[dict[str, Any]]]
