"""Staged writes: whole or nothing, and readable like any file the process writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.atomic import staged_directory, staged_file, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_staged_entries_get_the_modes_of_plain_ones(tmp_path: Path) -> None:
    # mkstemp / mkdtemp alone would give 0600 / 0700, unreadable to other users
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    write_text_atomic(tmp_path / "staged.txt", "x")
    with staged_directory(tmp_path / "staged") as folder:
        (folder / "inside.txt").write_text("x")
    assert _mode(tmp_path / "staged.txt") == _mode(tmp_path / "plain.txt")
    assert _mode(tmp_path / "staged") == _mode(tmp_path / "plain")


def test_a_failed_write_keeps_the_earlier_file(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    write_text_atomic(target, "a,b\r\n1,2\r\n")
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"  # no newline translation
    with pytest.raises(RuntimeError), staged_file(target) as staging:
        staging.write_text("half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
