"""The attacker's operations on its world: read a user's top-k (counted against the query
budget through leases) and inject a user (checked, screened by the world's defence,
refreshed on the refresh thread, committed to the ledger, then installed)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from recsys_server.data import TargetData
from recsys_server.domain_errors import (
    BudgetExhausted,
    IdempotencyKeyReused,
    InvalidProfile,
    KeyRevoked,
    UserNotFound,
)
from recsys_server.ledger import Ledger
from recsys_server.observability import ServiceMetrics
from recsys_server.victims.base import ServingState
from recsys_server.worlds.defence import Defences
from recsys_server.worlds.world import World, check_items, run_on, with_user
from shared.schemas import InjectUserResponse


class Attacks:
    def __init__(
        self,
        ledger: Ledger,
        data: TargetData,
        defences: Defences,
        metrics: ServiceMetrics,
        *,
        max_profile_length: int,
        query_lease: int,
    ) -> None:
        """``query_lease``: how many queries one ledger write counts ahead (see :meth:`topk`)."""
        self.ledger = ledger
        self.data = data
        self.defences = defences
        self.metrics = metrics
        self.max_profile_length = max_profile_length
        self.query_lease = query_lease
        # one thread mutates world states (the refresh), off the event loop
        self._refresher = ThreadPoolExecutor(1, thread_name_prefix="refresh")

    def close(self) -> None:
        self._refresher.shutdown(wait=True)

    def topk(self, world: World, user: int, k: int) -> list[int]:
        """Synchronous on purpose: check, count and answer with no await in between, so
        nothing can change the world halfway (about 0.1 ms of numpy).

        A query is answered from the world's lease: queries the ledger already counts
        as spent. An empty lease is refilled first with up to ``query_lease`` queries
        in one committed write, so there is one write per lease, not per query, and an
        answered query was always committed before it was answered."""
        if world.deleted:
            raise KeyRevoked()
        # the attacker may query its pretend users and the users it injected, nothing else
        if user in world.pretend_users:
            state = world.state
        elif world.injected_state.graph.is_injected(user):
            state = world.injected_state
        else:
            raise UserNotFound(user)
        if world.query_lease == 0:
            world.query_lease = self.ledger.lease_queries(world.world_id, self.query_lease)
            if world.query_lease == 0:
                raise BudgetExhausted("the query budget of this world is spent")
        world.query_lease -= 1
        self.metrics.queries.labels(world.world_id).inc()
        return state.topk(user, k).tolist()

    async def inject(
        self, world: World, items: list[int], idempotency_key: str | None
    ) -> InjectUserResponse:
        self._check_profile(items)
        async with world.lock:
            if world.deleted:
                raise KeyRevoked()
            if idempotency_key is not None:
                earlier = self.ledger.injection_by_key(world.world_id, idempotency_key)
                if earlier is not None:
                    if earlier.items != items:
                        raise IdempotencyKeyReused(idempotency_key)
                    return self._injected(world, earlier.user_id, len(items))
            remaining = self.ledger.world(world.world_id).remaining()
            if remaining.injections < 1:
                raise BudgetExhausted("the injection budget of this world is spent")
            if remaining.items < len(items):
                raise BudgetExhausted(
                    f"the item budget of this world has {remaining.items} items left, "
                    f"the profile has {len(items)}"
                )
            started = time.perf_counter()
            refreshed, shadow, user, quarantined = await run_on(
                self._refresher, self._screened, world, items
            )
            self.metrics.refresh_seconds.observe(time.perf_counter() - started)
            # acknowledged only once committed; if this raises, ``refreshed`` is dropped
            if not self.ledger.record_injection(
                world.world_id, user, items, idempotency_key, quarantined
            ):
                raise BudgetExhausted("a budget of this world is spent")  # checked above: rare
            world.state, world.shadow = refreshed, shadow
            world.quarantined += quarantined
            world.embedding_epoch += 1
            self.metrics.injections.labels(world.world_id).inc()
            return self._injected(world, user, len(items))

    def _screened(
        self, world: World, items: list[int]
    ) -> tuple[ServingState, ServingState | None, int, bool]:
        """The world's states with the profile injected, its user id, and whether the
        defence quarantined it (then the defended state is left as it was). Runs on the
        refresh thread."""
        if world.shadow is None:
            refreshed, user = with_user(world.state, items)
            return refreshed, None, user, False
        quarantined = self.defences.flags(world, items)
        shadow, user = with_user(world.shadow, items)
        # the defended refresh runs whatever the verdict, so that a quarantined injection
        # takes the time an accepted one does: its answer time must not tell
        defended = with_user(world.state, items)[0]
        return (world.state if quarantined else defended), shadow, user, quarantined

    def _injected(self, world: World, user: int, n_items: int) -> InjectUserResponse:
        return InjectUserResponse(
            user_id=user, n_items=n_items, remaining=self.ledger.world(world.world_id).remaining()
        )

    def _check_profile(self, items: list[int]) -> None:
        if len(items) > self.max_profile_length:
            raise InvalidProfile(
                f"items: the profile has {len(items)} items, at most "
                f"{self.max_profile_length} are allowed"
            )
        check_items(items, self.data.n_items, "items")
        repeated = sorted(i for i, count in Counter(items).items() if count > 1)
        if repeated:
            raise InvalidProfile(
                f"items: repeated item ids {repeated[:10]}; a profile holds each item once"
            )
