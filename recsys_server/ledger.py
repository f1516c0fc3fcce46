"""The durable record of the service: worlds, their hashed keys, budget counters, every
acknowledged injection and every finished retrain, in SQLite (WAL).

A restarted server rebuilds each world by replaying its injections and retrains in order
(a retrain is seeded, so its replay is the same fine-tune), so the
ledger is the source of truth: an injection is acknowledged only after its row is
committed, and the budget check and the write are one statement or one transaction, so
nothing is counted twice or past a budget. All calls come from the event loop's thread;
each is a short local transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.errors import CopyAttackError
from shared.schemas import DEFENCES, Budgets, Counts, Defence

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS worlds (
    world_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    pretend_users TEXT NOT NULL,
    budget_queries INTEGER NOT NULL,
    budget_injections INTEGER NOT NULL,
    budget_items INTEGER NOT NULL,
    used_queries INTEGER NOT NULL DEFAULT 0,
    used_injections INTEGER NOT NULL DEFAULT 0,
    used_items INTEGER NOT NULL DEFAULT 0,
    total_queries INTEGER NOT NULL DEFAULT 0,
    total_injections INTEGER NOT NULL DEFAULT 0,
    total_items INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS injections (
    world_id TEXT NOT NULL REFERENCES worlds(world_id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    items TEXT NOT NULL,
    idempotency_key TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (world_id, user_id),
    UNIQUE (world_id, idempotency_key)
);
-- every finished retrain, in order (rowid): replayed on restart after the first
-- ``after_injections`` injections of its world; the sha256 of the scores it gave the
-- world's pretend users checks that the replay is the same fine-tune
CREATE TABLE IF NOT EXISTS retrains (
    world_id TEXT NOT NULL REFERENCES worlds(world_id) ON DELETE CASCADE,
    after_injections INTEGER NOT NULL,
    epochs INTEGER NOT NULL,
    scores_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS retrains_of_world ON retrains (world_id);
"""
# columns added after the first ledgers were written: added to an older ledger on open,
# always at the end of their table (rows are read by position)
ADDED_COLUMNS = (
    ("worlds", "defence", "TEXT NOT NULL DEFAULT 'none'"),
    ("worlds", "defence_threshold", "REAL"),
    ("injections", "quarantined", "INTEGER NOT NULL DEFAULT 0"),
)


class LedgerError(CopyAttackError):
    """A ledger that cannot be opened or belongs to another model."""


@dataclass(frozen=True)
class WorldRecord:
    world_id: str
    key_hash: str
    pretend_users: list[int]
    budgets: Budgets
    used: Counts
    total: Counts
    defence: Defence = "none"  # the detector that screens injections (recsys_server.detection)
    # the threshold in force; None without a defence, or in a ledger written before
    # thresholds were recorded (the restore records the detector's default then)
    defence_threshold: float | None = None

    def remaining(self) -> Counts:
        return Counts(
            queries=self.budgets.queries - self.used.queries,
            injections=self.budgets.injections - self.used.injections,
            items=self.budgets.items - self.used.items,
        )


@dataclass(frozen=True)
class RetrainRecord:
    after_injections: int  # how many of the world's injections the fine-tune saw
    epochs: int
    scores_sha256: str


@dataclass(frozen=True)
class InjectionRecord:
    user_id: int
    items: list[int]
    idempotency_key: str | None
    created_at: float
    quarantined: bool = False  # flagged by the world's defence: acknowledged, not in the graph


class Ledger:
    def __init__(self, path: Path, fingerprint: str, synchronous: str = "NORMAL") -> None:
        """Open (or create) the ledger at ``path`` for the model of scenario ``fingerprint``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # a short busy wait: the calls run on the event loop; a ledger held elsewhere
            # (a backup, a shell) answers 503 rather than stalling every world
            self._db = sqlite3.connect(
                path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            for table, column, kind in ADDED_COLUMNS:
                present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path}: not a usable SQLite ledger ({exc})") from None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fingerprint,))
        elif row[0] != fingerprint:
            raise LedgerError(
                f"{path} records worlds of scenario {row[0][:16]}, but the model is for "
                f"{fingerprint[:16]}: item ids would mean other movies; use another ledger path"
            )

    def close(self) -> None:
        self._db.close()

    # --- worlds --------------------------------------------------------------------

    def create_world(
        self,
        world_id: str,
        key_hash: str,
        pretend_users: list[int],
        budgets: Budgets,
        defence: Defence = "none",
        defence_threshold: float | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO worlds (world_id, key_hash, pretend_users, budget_queries, "
            "budget_injections, budget_items, created_at, defence, defence_threshold) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                world_id,
                key_hash,
                json.dumps(pretend_users),
                budgets.queries,
                budgets.injections,
                budgets.items,
                time.time(),
                defence,
                defence_threshold,
            ),
        )

    def record_defence_threshold(self, world_id: str, threshold: float) -> None:
        self._db.execute(
            "UPDATE worlds SET defence_threshold = ? WHERE world_id = ?", (threshold, world_id)
        )

    def delete_world(self, world_id: str) -> None:
        self._db.execute("DELETE FROM worlds WHERE world_id = ?", (world_id,))

    def world(self, world_id: str) -> WorldRecord:
        row = self._db.execute("SELECT * FROM worlds WHERE world_id = ?", (world_id,)).fetchone()
        if row is None:
            raise KeyError(world_id)
        return _world_record(row)

    def worlds(self) -> list[WorldRecord]:
        rows = self._db.execute("SELECT * FROM worlds ORDER BY created_at, world_id")
        return [_world_record(row) for row in rows]

    def reset_world(self, world_id: str, restore_budgets: bool) -> None:
        """Drop the world's injections and retrains (and, if asked, zero its budget
        counters)."""
        with self._transaction():
            self._db.execute("DELETE FROM injections WHERE world_id = ?", (world_id,))
            self._db.execute("DELETE FROM retrains WHERE world_id = ?", (world_id,))
            if restore_budgets:
                self._db.execute(
                    "UPDATE worlds SET used_queries = 0, used_injections = 0, used_items = 0 "
                    "WHERE world_id = ?",
                    (world_id,),
                )

    # --- counted actions -----------------------------------------------------------

    def lease_queries(self, world_id: str, wanted: int) -> int:
        """Count up to ``wanted`` more queries as spent, in one committed write, and
        return how many the budget allowed (0: it is spent, and nothing was counted).

        Queries are counted in such leases: the server answers that many from memory
        afterwards, so the counters are never below what was answered (a crash can only
        over-count, by the unanswered rest of a lease) and never above the budget."""
        with self._transaction():
            row = self._db.execute(
                "SELECT budget_queries - used_queries FROM worlds WHERE world_id = ?",
                (world_id,),
            ).fetchone()
            granted = 0 if row is None else max(0, min(wanted, row[0]))
            if granted:
                self._db.execute(
                    "UPDATE worlds SET used_queries = used_queries + ?1, "
                    "total_queries = total_queries + ?1 WHERE world_id = ?2",
                    (granted, world_id),
                )
        return granted

    def return_queries(self, world_id: str, unused: int) -> None:
        """Uncount the unanswered rest of a lease (a clean shutdown, a reset), so the
        counters say exactly how many queries were answered."""
        self._db.execute(
            "UPDATE worlds SET used_queries = used_queries - ?1, "
            "total_queries = total_queries - ?1 WHERE world_id = ?2",
            (unused, world_id),
        )

    def record_injection(
        self,
        world_id: str,
        user_id: int,
        items: list[int],
        idempotency_key: str | None,
        quarantined: bool = False,
    ) -> bool:
        """Count and record one injection if both budgets allow it, atomically; False (and
        nothing written) if not."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE worlds SET used_injections = used_injections + 1, "
                "used_items = used_items + ?1, total_injections = total_injections + 1, "
                "total_items = total_items + ?1 "
                "WHERE world_id = ?2 AND used_injections < budget_injections "
                "AND used_items + ?1 <= budget_items",
                (len(items), world_id),
            )
            if cursor.rowcount != 1:
                return False
            self._db.execute(
                "INSERT INTO injections VALUES (?, ?, ?, ?, ?, ?)",
                (world_id, user_id, json.dumps(items), idempotency_key, time.time(), quarantined),
            )
        return True

    def injections(self, world_id: str) -> list[InjectionRecord]:
        rows = self._db.execute(
            "SELECT user_id, items, idempotency_key, created_at, quarantined FROM injections "
            "WHERE world_id = ? ORDER BY user_id",
            (world_id,),
        )
        return [InjectionRecord(u, json.loads(i), k, t, bool(q)) for u, i, k, t, q in rows]

    def injection_by_key(self, world_id: str, idempotency_key: str) -> InjectionRecord | None:
        row = self._db.execute(
            "SELECT user_id, items, idempotency_key, created_at, quarantined FROM injections "
            "WHERE world_id = ? AND idempotency_key = ?",
            (world_id, idempotency_key),
        ).fetchone()
        if row is None:
            return None
        return InjectionRecord(row[0], json.loads(row[1]), row[2], row[3], bool(row[4]))

    # --- retrains --------------------------------------------------------------------

    def record_retrain(
        self, world_id: str, after_injections: int, epochs: int, scores_sha256: str
    ) -> None:
        self._db.execute(
            "INSERT INTO retrains VALUES (?, ?, ?, ?, ?)",
            (world_id, after_injections, epochs, scores_sha256, time.time()),
        )

    def retrains(self, world_id: str) -> list[RetrainRecord]:
        rows = self._db.execute(
            "SELECT after_injections, epochs, scores_sha256 FROM retrains "
            "WHERE world_id = ? ORDER BY rowid",
            (world_id,),
        )
        return [RetrainRecord(*row) for row in rows]

    # --- internals -----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _world_record(row: tuple) -> WorldRecord:
    (world_id, key_hash, pretend, bq, bi, bit, uq, ui, uit, tq, ti, tit, _created, *added) = row
    defence, defence_threshold = added
    if defence not in DEFENCES:
        raise LedgerError(f"world {world_id}: the ledger names an unknown defence {defence!r}")
    return WorldRecord(
        world_id=world_id,
        key_hash=key_hash,
        pretend_users=json.loads(pretend),
        budgets=Budgets(queries=bq, injections=bi, items=bit),
        used=Counts(queries=uq, injections=ui, items=uit),
        total=Counts(queries=tq, injections=ti, items=tit),
        defence=defence,
        defence_threshold=defence_threshold,
    )
