"""A tiny trained model served in-process (httpx over ASGI) or as a real uvicorn process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from recsys_server.app import create_app
from recsys_server.artifact import ModelArtifact
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.pinsage.train import train_pinsage
from recsys_server.settings import Settings
from recsys_server.training import TrainConfig
from tests.pinsage_fixtures import tiny_data

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def write_tiny_artifact(path: Path) -> Path:
    data = tiny_data()
    config = PinSageConfig(dim=8, walks=WalkConfig(n_walks=16, n_neighbours=5))
    train = TrainConfig(lr=0.01, max_epochs=2, patience=2, progress=False)
    model, _ = train_pinsage(data, config, train)
    ModelArtifact(model, data.fingerprint, {"note": "tiny test model"}, data).save(path)
    return path


def settings_for(artifact: Path, ledger: Path, **overrides: object) -> Settings:
    return Settings(artifact=artifact, ledger_path=ledger, admin_token=ADMIN_TOKEN, **overrides)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, lifespan included, once ``/readyz`` says ready."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            for _ in range(600):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"service never became ready: {app.state.load_error}")
            yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``recsys-server serve`` on 127.0.0.1 as a child process."""

    def __init__(self, artifact: Path, ledger: Path, **env: str) -> None:
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
        self._env = {**os.environ, "RECSYS_ADMIN_TOKEN": ADMIN_TOKEN, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self.process = subprocess.Popen(self._command, env=self._env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM: graceful shutdown; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
