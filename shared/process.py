"""``recsys-server serve`` as a child process on 127.0.0.1: for tests, benchmarks, load
tests and the local demo, which all need a real server they start and stop.

A child started here ends with its parent, even when the parent is SIGKILLed (no
``finally`` runs then): on Linux the kernel sends it SIGTERM when the parent dies
(``PR_SET_PDEATHSIG``, armed between fork and exec); where that is not available (another
OS, or a child started from a thread other than the main one, whose exit would fire the
signal early) the child's own watchdog thread polls its parent's pid
(:func:`watch_parent`, which ``recsys-server`` calls first). A child also gets its own
session, so Ctrl-C at the terminal reaches the parent alone, which stops the child.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from shared.errors import CopyAttackError

# set by spawn_tied for the child: the pid it must not outlive
PARENT_PID_VARIABLE = "COPYATTACK_PARENT_PID"
# set by ServerProcess without a ledger: a folder the server deletes when it ends
SCRATCH_VARIABLE = "COPYATTACK_SCRATCH_DIR"
_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, else None. Looked up before any fork: a child between
    fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _arm_parent_death_signal(prctl: Callable[..., int], parent: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def spawn_tied(
    command: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` as a child that ends with this process (see the module's doc)."""
    parent = os.getpid()
    prctl = _prctl()
    armed = prctl is not None and threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        list(command),
        env={**(os.environ if env is None else env), PARENT_PID_VARIABLE: str(parent)},
        start_new_session=True,
        preexec_fn=_arm_parent_death_signal(prctl, parent) if armed and prctl else None,
    )


def run_tied(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` as a tied child to its end; its exit code. Interrupted (Ctrl-C,
    which reaches this process only), it stops the child (SIGTERM) before unwinding."""
    process = spawn_tied(command, env)
    try:
        return process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait()


def _parent_death_signal() -> int:
    """The parent-death signal armed for this process (0: none, or not Linux)."""
    prctl = _prctl()
    if prctl is None:
        return 0
    armed = ctypes.c_int(0)
    prctl(_PR_GET_PDEATHSIG, ctypes.byref(armed), 0, 0, 0)
    return armed.value


def watch_parent(poll_seconds: float = 0.5) -> None:
    """In a child of :func:`spawn_tied`: make sure it ends (SIGTERM to itself, as the
    parent-death signal would) when its parent is gone. Nothing to do when the parent-death
    signal is armed; otherwise a daemon thread polls the parent's pid. A no-op in a
    process that was not started by :func:`spawn_tied`."""
    value = os.environ.pop(PARENT_PID_VARIABLE, None)
    if value is None or _parent_death_signal():
        return
    threading.Thread(
        target=_watch, args=(int(value), poll_seconds), name="parent-watchdog", daemon=True
    ).start()


def _watch(parent: int, poll_seconds: float) -> None:
    while os.getppid() == parent:  # re-parented (to init or a subreaper) once it is gone
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGTERM)


class _Terminated(BaseException):
    pass


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextmanager
def scratch_removed_on_exit() -> Iterator[None]:
    """In a server started by :class:`ServerProcess` without a ledger: delete its scratch
    folder (the ledger's) when the block ends, also on SIGTERM (the parent's stop, or the
    parent's death), after which the process still ends by SIGTERM. Main thread only."""
    folder = os.environ.pop(SCRATCH_VARIABLE, None)
    if folder is None:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    terminated = False
    try:
        yield
    except _Terminated:
        terminated = True
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``recsys-server serve`` on 127.0.0.1 as a child process, tied to this one. Without a
    ``ledger`` it serves a fresh one in a temporary folder that the server deletes when it
    ends (so also when this process is killed), and :meth:`stop` deletes if it is left."""

    def __init__(
        self,
        artifact: Path,
        ledger: Path | None,
        *,
        admin_token: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._scratch: Path | None = None
        if ledger is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="recsys-server-"))
            ledger = self._scratch / "ledger.sqlite3"
            env = {**(env or {}), SCRATCH_VARIABLE: str(self._scratch)}
        self.ledger = ledger
        self._command = [
            sys.executable,
            "-m",
            "recsys_server.cli",
            "serve",
            "--artifact",
            str(artifact),
            "--ledger",
            str(ledger),
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self._env = {**os.environ, "RECSYS_ADMIN_TOKEN": admin_token, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.process = spawn_tied(self._command, self._env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CopyAttackError(
                    f"recsys-server exited with {self.process.returncode} before it was ready "
                    "(its error is above)"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise CopyAttackError(f"recsys-server did not become ready within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM: graceful shutdown; returns the exit code (None: never started)."""
        try:
            if self.process is None:
                return None
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            return self.process.returncode
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
