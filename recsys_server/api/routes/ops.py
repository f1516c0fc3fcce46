"""Operations: liveness and readiness (open, for orchestrators), Prometheus metrics (admin
token: they name every world and its traffic, which attackers must not see)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys_server.api.deps import AdminDep, MetricsDep, RegistryDep
from recsys_server.api.problems import Forbidden, NotReady, Unauthorized, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process answers (also while the model loads)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(NotReady))
async def readyz(registry: RegistryDep) -> dict[str, str]:
    """Ready once the model and every world's embeddings are loaded."""
    return {"status": "ready"}


@router.get(
    "/metrics",
    dependencies=[AdminDep],
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **problem_responses(Unauthorized, Forbidden, NotReady),
    },
)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Requests and latency per route, queries and injections per world, refresh seconds,
    live worlds. Behind the admin token: it names every world and its traffic."""
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
