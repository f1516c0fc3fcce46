"""Operations: liveness and readiness (open, for orchestrators), Prometheus metrics (admin
token: they name every world and its traffic, which attackers must not see)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys_server.api.deps import AdminDep, MetricsDep, RegistryDep
from recsys_server.problems import NotReady, problem_responses

router = APIRouter(tags=["operations"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process answers (also while the model loads)."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(NotReady))
async def readyz(registry: RegistryDep) -> dict[str, str]:
    """Ready once the model and every world's embeddings are loaded."""
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False, dependencies=[AdminDep])
async def metrics(service_metrics: MetricsDep) -> Response:
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
