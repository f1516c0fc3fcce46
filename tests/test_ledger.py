"""The ledger's schema moves forward only: a ledger of the first schema opens and gains
what it lacks, rows kept; a ledger of a later schema than this version's is refused,
unchanged, with what to do."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from recsys_server.ledger import SCHEMA, SCHEMA_VERSION, Ledger, LedgerError

FINGERPRINT = "f" * 64


def first_schema_ledger(path: Path) -> None:
    """A ledger as the first versions wrote it: no defence columns, no schema version."""
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (FINGERPRINT,))
        db.execute(
            "INSERT INTO worlds VALUES ('w_1', 'h', '[3, 5]', 10, 2, 20, 1, 1, 2, 1, 1, 2, 0.0)"
        )
        db.execute("INSERT INTO injections VALUES ('w_1', 9, '[1, 2]', NULL, 0.0)")


def test_a_first_schema_ledger_opens_with_its_rows_and_records_the_schema(
    tmp_path: Path,
) -> None:
    first_schema_ledger(tmp_path / "l.db")
    ledger = Ledger(tmp_path / "l.db", FINGERPRINT)
    world = ledger.world("w_1")
    assert (world.pretend_users, world.used.injections, world.defence) == ([3, 5], 1, "none")
    assert world.defence_threshold is None
    [injection] = ledger.injections("w_1")
    assert (injection.user_id, injection.items, injection.quarantined) == (9, [1, 2], False)
    assert ledger.record_injection("w_1", 10, [4], None, quarantined=True)
    ledger.close()
    with closing(sqlite3.connect(tmp_path / "l.db")) as db:
        [(version,)] = db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert int(version) == SCHEMA_VERSION


def test_a_ledger_of_a_later_schema_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path, FINGERPRINT).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
        db.execute("CREATE TABLE later (x INTEGER)")  # what the later version added
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=r"written by a later version.*restore the copy"):
        Ledger(path, FINGERPRINT)
    assert path.read_bytes() == before
