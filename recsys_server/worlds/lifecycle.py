"""The worlds themselves: lookup by id and by key, creation, reset, deletion, usage and
export, each kept in step with the ledger; and the replay of every world in the ledger
when the service starts."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import numpy as np

from recsys_server.data import TargetData
from recsys_server.domain_errors import PretendPoolTooSmall, WorldNotFound
from recsys_server.ledger import Ledger, LedgerError, WorldRecord
from recsys_server.observability import ServiceMetrics
from recsys_server.security import hash_key, new_api_key
from recsys_server.victims.base import ServingState
from recsys_server.worlds.defence import Defences
from recsys_server.worlds.retrains import RetrainJobs
from recsys_server.worlds.world import World, still_there
from shared.schemas import (
    Counts,
    CreateWorldRequest,
    Defence,
    InjectedProfile,
    WorldCreated,
    WorldUsage,
)

log = logging.getLogger("recsys_server")


class Worlds:
    def __init__(
        self,
        ledger: Ledger,
        clean: ServingState,
        data: TargetData,
        defences: Defences,
        retrains: RetrainJobs,
        metrics: ServiceMetrics,
    ) -> None:
        self.ledger = ledger
        self.clean = clean
        self.data = data
        self.defences = defences
        self.retrains = retrains
        self.metrics = metrics
        self._worlds: dict[str, World] = {}
        self._by_key: dict[str, World] = {}

    def __len__(self) -> int:
        return len(self._worlds)

    # --- lookup --------------------------------------------------------------------

    def get(self, world_id: str) -> World:
        try:
            return self._worlds[world_id]
        except KeyError:
            raise WorldNotFound(world_id) from None

    def for_key(self, key: str) -> World | None:
        # looked up by the key's SHA-256: lookup time can only reveal bits of the hash,
        # which say nothing usable about a 256-bit random key
        return self._by_key.get(hash_key(key))

    def __iter__(self) -> Iterator[World]:
        return iter(list(self._worlds.values()))

    # --- lifecycle -----------------------------------------------------------------

    async def create(self, request: CreateWorldRequest) -> WorldCreated:
        """A new world; a defence's detector is fitted first (once per detector: seconds
        on the real pairs, off the event loop). The threshold in force, the stated one or
        else the detector's default, is recorded: a restart, or a later version whose
        default differs, screens the world's injections at the same threshold."""
        pool = self.data.pretend_pool
        if request.n_pretend_users > len(pool):
            raise PretendPoolTooSmall(
                f"n_pretend_users is {request.n_pretend_users}, but the pretend-user pool "
                f"holds {len(pool)} users"
            )
        defence, threshold = request.defence, request.defence_threshold
        if defence != "none":
            default = await self.defences.prepare(defence)
            threshold = default if threshold is None else threshold
        rng = np.random.default_rng(request.seed)
        pretend = sorted(int(u) for u in rng.choice(pool, request.n_pretend_users, replace=False))
        world_id, key = "w_" + secrets.token_hex(8), new_api_key()
        self.ledger.create_world(
            world_id, hash_key(key), pretend, request.budgets, defence, threshold
        )
        world = self._new_world(world_id, hash_key(key), pretend, defence, threshold)
        self._add(world)
        return WorldCreated(
            world_id=world_id,
            api_key=key,
            pretend_users=pretend,
            budgets=request.budgets,
            defence=defence,
            defence_threshold=world.defence_threshold,
        )

    async def delete(self, world: World) -> None:
        # its running fine-tune stops at its next batch and gives the lock up
        await self.retrains.stop_of(world)
        async with world.lock:
            still_there(world)
            self.ledger.delete_world(world.world_id)
            world.deleted = True
            del self._worlds[world.world_id]
            del self._by_key[world.key_hash]
            for counter in (self.metrics.queries, self.metrics.injections):
                counter.remove(world.world_id)

    async def reset(self, world: World, restore_budgets: bool) -> WorldUsage:
        # a retrain of the attacked graph would be dropped by the reset: stop it instead
        await self.retrains.stop_of(world)
        async with world.lock:
            still_there(world)
            # given back first: a restored budget must not keep an old lease, and the
            # lifetime total must not keep its unanswered rest
            self._return_lease(world)
            self.ledger.reset_world(world.world_id, restore_budgets)
            world.state = self.clean.fork()
            world.shadow = None if world.shadow is None else self.clean.fork()
            world.quarantined = 0
            world.embedding_epoch = 0
        return self.usage(world)

    def return_leases(self) -> None:
        """Give back every world's unanswered lease (at shutdown: the counters become
        exact)."""
        for world in self._worlds.values():
            self._return_lease(world)

    # --- reading -------------------------------------------------------------------

    def usage(self, world: World) -> WorldUsage:
        """The live counts: the ledger's, less the queries leased but not yet answered."""
        record = self.ledger.world(world.world_id)
        lease = world.query_lease
        return WorldUsage(
            world_id=world.world_id,
            pretend_users=sorted(world.pretend_users),
            budgets=record.budgets,
            used=_less_queries(record.used, lease),
            total=_less_queries(record.total, lease),
            remaining=_less_queries(record.remaining(), -lease),
            injected_users=len(world.state.graph.injected_users),
            embedding_epoch=world.embedding_epoch,
            defence=world.defence,
            defence_threshold=world.defence_threshold,
            quarantined=world.quarantined,
        )

    def export(self, world: World) -> list[InjectedProfile]:
        return [
            InjectedProfile(
                user_id=r.user_id,
                items=r.items,
                idempotency_key=r.idempotency_key,
                created_at=r.created_at,
                quarantined=r.quarantined,
            )
            for r in self.ledger.injections(world.world_id)
        ]

    # --- replay --------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild every world of the ledger by replaying its injections and retrains."""
        for record in self.ledger.worlds():
            self._restore(record)

    def _restore(self, record: WorldRecord) -> None:
        threshold = record.defence_threshold
        if record.defence != "none":  # fitted while loading, not on a first request
            default = self.defences.default_threshold(record.defence)
            if threshold is None:  # a ledger written before thresholds were recorded
                threshold = default
                self.ledger.record_defence_threshold(record.world_id, threshold)
                log.info("world %s: defence threshold %s recorded", record.world_id, threshold)
        world = self._new_world(
            record.world_id, record.key_hash, record.pretend_users, record.defence, threshold
        )
        retrains = self.ledger.retrains(record.world_id)
        injections = self.ledger.injections(record.world_id)
        for position, injection in enumerate(injections):
            retrains = self.retrains.replay(world, retrains, position)
            items = np.asarray(injection.items, dtype=np.int64)
            if world.shadow is None:
                user = world.state.add_user(items)
            else:  # the user ids are the shadow's; the defended state numbers its own
                user = world.shadow.add_user(items)
                # the ledger's verdict, not a new one: a replay quarantines the same
                if injection.quarantined:
                    world.quarantined += 1
                else:
                    world.state.add_user(items)
            if user != injection.user_id:
                raise LedgerError(
                    f"replaying world {record.world_id}: injection recorded as user "
                    f"{injection.user_id} came back as user {user}"
                )
            world.embedding_epoch += 1
        self.retrains.replay(world, retrains, len(injections))
        self._add(world)

    # --- internals -----------------------------------------------------------------

    def _add(self, world: World) -> None:
        self._worlds[world.world_id] = world
        self._by_key[world.key_hash] = world

    def _return_lease(self, world: World) -> None:
        if world.query_lease:
            self.ledger.return_queries(world.world_id, world.query_lease)
            world.query_lease = 0

    def _new_world(
        self,
        world_id: str,
        key_hash: str,
        pretend: list[int],
        defence: Defence,
        threshold: float | None,
    ) -> World:
        shadow = None if defence == "none" else self.clean.fork()
        return World(
            world_id,
            key_hash,
            frozenset(pretend),
            self.clean.fork(),
            defence=defence,
            defence_threshold=threshold,
            shadow=shadow,
        )


def _less_queries(counts: Counts, n: int) -> Counts:
    return counts.model_copy(update={"queries": counts.queries - n})
