"""A tiny trained model served in-process (httpx over ASGI) or as a real uvicorn process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from recsys_server.app import create_app
from recsys_server.artifact import ModelArtifact
from recsys_server.data import TargetData
from recsys_server.pinsage.model import PinSageConfig
from recsys_server.pinsage.sampler import WalkConfig
from recsys_server.pinsage.train import train_pinsage
from recsys_server.settings import Settings
from recsys_server.training import TrainConfig
from recsys_server.victims.pinsage import PinSageVictim
from shared.process import ServerProcess
from shared.scenario import load_scenario

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NO_RATE_LIMIT = {"RECSYS_RATE_LIMIT": "100000/second"}


def write_tiny_artifact(path: Path, scenario_dir: Path) -> Path:
    """Train the tiny model on the scenario saved in ``scenario_dir`` (the artifact carries
    its fingerprint, so an attacker can load the matching view)."""
    data = TargetData.from_scenario(load_scenario(scenario_dir))
    config = PinSageConfig(dim=8, walks=WalkConfig(n_walks=16, n_neighbours=5))
    train = TrainConfig(lr=0.01, max_epochs=2, patience=2, progress=False)
    model, _ = train_pinsage(data, config, train)
    ModelArtifact(PinSageVictim(model), data.fingerprint, {"note": "tiny test model"}, data).save(
        path
    )
    return path


def settings_for(artifact: Path, ledger: Path, **overrides: Any) -> Settings:
    return Settings(
        artifact=artifact, ledger_path=ledger, admin_token=SecretStr(ADMIN_TOKEN), **overrides
    )


TRANSPORTS = ("in-process", "uvicorn")


@asynccontextmanager
async def serving(
    settings: Settings, transport: str = "in-process"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service once ``/readyz`` says ready: the app in-process (httpx over
    ASGI, lifespan included) or ``recsys-server serve`` as a process on 127.0.0.1 with
    the same settings (passed as RECSYS_* variables)."""
    if transport == "uvicorn":
        env = {
            f"RECSYS_{name.upper()}": str(value)
            for name, value in settings.model_dump(exclude={"admin_token"}).items()
            if value is not None
        }
        server = tiny_server(settings.artifact, settings.ledger_path, **env)
        await asyncio.to_thread(server.start)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                yield client
        finally:
            await asyncio.to_thread(server.stop)
        return
    async with running_app(settings) as app:
        asgi = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=asgi, base_url=IN_PROCESS_URL) as client:
            yield client


IN_PROCESS_URL = "http://service"


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, once the model and worlds are loaded."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await loaded(app)
        if app.state.registry is None:
            raise RuntimeError(f"service never became ready: {app.state.load_error}")
        yield app


async def loaded(app: FastAPI) -> None:
    """Until the app's loading ended, ready or failed (the bound only catches a hang)."""
    await asyncio.wait_for(app.state.loaded.wait(), timeout=600)


def tiny_server(artifact: Path, ledger: Path, **env: str) -> ServerProcess:
    return ServerProcess(artifact, ledger, admin_token=ADMIN_TOKEN, env=env)


async def finished_job(client: httpx.AsyncClient, location: str) -> dict:
    """Poll a retrain job until it finished (the bound only catches a hang)."""
    for _ in range(60_000):  # 0.01 s apart: 10 minutes at the least
        job = (await client.get(location, headers=ADMIN)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"retrain job {location} never finished: {job}")


async def retrain(client: httpx.AsyncClient, world_id: str, epochs: int) -> dict:
    """Start a retrain of the world and wait for the job to succeed; the finished job."""
    started = await client.post(
        f"/admin/worlds/{world_id}/retrain", json={"epochs": epochs}, headers=ADMIN
    )
    assert started.status_code == 202, started.text
    job = await finished_job(client, started.headers["location"])
    assert job["status"] == "succeeded", job
    return job
