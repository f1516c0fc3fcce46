"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys_server.api.deps import MetricsDep, RegistryDep
from recsys_server.problems import NotReady, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process answers (also while the model loads)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(NotReady))
async def readyz(registry: RegistryDep) -> dict[str, str | int]:
    """Ready once the model and every world's embeddings are loaded."""
    return {"status": "ready", "worlds": registry.n_worlds}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, service_metrics: MetricsDep) -> Response:
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
