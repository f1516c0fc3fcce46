"""``recsys-server serve`` as a child process on 127.0.0.1: for tests, benchmarks, load
tests and the local demo, which all need a real server they start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.errors import CopyAttackError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``recsys-server serve`` on 127.0.0.1 as a child process."""

    def __init__(
        self, artifact: Path, ledger: Path, *, admin_token: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
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
        self.process = subprocess.Popen(self._command, env=self._env)
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
