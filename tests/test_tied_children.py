"""A child process started by the demo (the trainer, the server) ends with it, whatever
ends the demo, and leaves no temporary ledger; Ctrl-C and SIGTERM end it with one line.

The demo runs as a process (``tests/tied_children.py``) whose attack never ends, so each
signal arrives at a known point: while the server is up. Linux only (``/proc``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recsys_server.cli import main as recsys_main

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
ROOT = Path(__file__).resolve().parent.parent
# ends a test that would otherwise hang when the awaited state never comes; far beyond
# any wait a loaded machine gives, and never what a test asserts
HANG_GUARD_SECONDS = 600.0


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan is reaped by whoever adopted it, if ever)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def eventually(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until it holds (or the hang guard ends the wait). The state is
    what is asserted, never how fast it came."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tied_children", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a job
    )


def wait_for_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(prefix):
            return line.split()[1]
    process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    raise AssertionError(f"exited with {process.returncode}: {stderr}")


@pytest.fixture()
def leftovers() -> Iterator[list[int]]:
    """Pids a test started (directly or not): whatever a failing test leaves is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of the tiny pair where the demo keeps it, cheap: the demos below serve it."""
    work = tmp_path_factory.mktemp("demo")
    cheap = ["--dim", "8", "--walks", "8", "--max-epochs", "1"]
    assert recsys_main(["prepare", "--pair", "tiny", "--workdir", str(work / "tiny"), *cheap]) == 0
    return work


def demo_with_its_server(
    workdir: Path, out: Path, leftovers: list[int]
) -> tuple[subprocess.Popen[str], int, Path]:
    """A demo attacking; its server's pid and the folder of its temporary ledger."""
    demo = spawn("demo", str(workdir), str(out))
    leftovers.append(demo.pid)
    wait_for_line(demo, "ATTACKING")
    [server] = children(demo.pid)
    leftovers.append(server)
    line = command_line(server)
    assert "serve" in line
    ledger = Path(line[line.index("--ledger") + 1])
    assert ledger.exists()
    return demo, server, ledger.parent


def test_a_sigkilled_demo_takes_its_server_and_ledger_along(
    workdir: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    demo, server, scratch = demo_with_its_server(workdir, tmp_path / "out", leftovers)
    demo.kill()
    demo.wait()
    assert eventually(lambda: not alive(server) and not scratch.exists()), (
        f"server {server} alive: {alive(server)}; {scratch} exists: {scratch.exists()}"
    )


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_demo_says_one_line_and_stops_its_server(
    how: str, workdir: Path, tmp_path: Path, leftovers: list[int]
) -> None:
    demo, server, scratch = demo_with_its_server(workdir, tmp_path / "out", leftovers)
    if how == "ctrl-c":  # the terminal sends SIGINT to the whole foreground job
        os.killpg(demo.pid, signal.SIGINT)
    else:
        demo.terminate()
    _, err = demo.communicate(timeout=HANG_GUARD_SECONDS)
    assert err.splitlines() == ["copyattack: interrupted"], err
    assert demo.returncode == 130
    assert eventually(lambda: not alive(server) and not scratch.exists())


def test_a_server_started_from_a_thread_ends_with_its_parent_by_its_watchdog(
    workdir: Path, leftovers: list[int]
) -> None:
    parent = spawn("server-from-a-thread", str(workdir / "tiny" / "model.pt"))
    leftovers.append(parent.pid)
    server = int(wait_for_line(parent, "SERVING"))
    leftovers.append(server)
    line = command_line(server)
    scratch = Path(line[line.index("--ledger") + 1]).parent
    assert alive(server) and scratch.exists()  # outlived the thread that started it
    parent.kill()
    parent.wait()
    assert eventually(lambda: not alive(server) and not scratch.exists())
