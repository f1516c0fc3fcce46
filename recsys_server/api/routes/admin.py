"""Experiment control, behind the admin token: worlds, their usage, their injected
profiles, and the evaluation of target items on them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from recsys_server import __version__
from recsys_server.api.deps import AdminDep, AdminRoute, MetricsDep, RegistryDep, WorldDep
from recsys_server.api.problems import (
    Conflict,
    ContentTooLarge,
    Forbidden,
    InvalidRequest,
    LedgerUnavailable,
    NotFound,
    NotReady,
    TooManyJobs,
    Unauthorized,
    problem_responses,
)
from shared.schemas import (
    CreateWorldRequest,
    DetectionReport,
    DetectRequest,
    EvaluateRequest,
    EvaluationReport,
    InjectedProfile,
    ModelInfo,
    ResetRequest,
    RetrainJob,
    RetrainRequest,
    WorldCreated,
    WorldUsage,
)

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[AdminDep],
    responses=problem_responses(Unauthorized, Forbidden, NotReady, LedgerUnavailable),
    route_class=AdminRoute,
)
WORLD_PROBLEMS = problem_responses(NotFound, InvalidRequest)
WORLD_BODY_PROBLEMS = problem_responses(NotFound, InvalidRequest, ContentTooLarge)


@router.get("/model")
async def model_info(registry: RegistryDep) -> ModelInfo:
    artifact = registry.artifact
    return ModelInfo(
        version=__version__,
        scenario_fingerprint=artifact.scenario_fingerprint,
        model_fingerprint=artifact.weights_fingerprint,
        victim=artifact.victim.name,
        config=artifact.victim.config_dict(),
        metrics=artifact.metrics,
        n_users=registry.data.n_users,
        n_items=registry.data.n_items,
        worlds=registry.n_worlds,
    )


@router.post(
    "/worlds", status_code=201, responses=problem_responses(InvalidRequest, ContentTooLarge)
)
async def create_world(
    body: CreateWorldRequest, registry: RegistryDep, metrics: MetricsDep
) -> WorldCreated:
    """A new world: its key (shown once), its pretend users, its budgets, its defence."""
    created = await registry.worlds.create(body)
    metrics.worlds.set(registry.n_worlds)
    return created


@router.get("/worlds", responses=problem_responses(InvalidRequest))
async def list_worlds(registry: RegistryDep) -> list[WorldUsage]:
    return [registry.worlds.usage(world) for world in registry.worlds]


@router.get("/worlds/{world_id}/usage", responses=WORLD_PROBLEMS)
async def world_usage(world: WorldDep, registry: RegistryDep) -> WorldUsage:
    return registry.worlds.usage(world)


@router.post("/worlds/{world_id}/reset", responses=WORLD_BODY_PROBLEMS)
async def reset_world(
    world: WorldDep, registry: RegistryDep, body: ResetRequest | None = None
) -> WorldUsage:
    """Drop the world's injections; its pretend users and key stay."""
    return await registry.worlds.reset(world, (body or ResetRequest()).restore_budgets)


@router.post(
    "/worlds/{world_id}/retrain",
    status_code=202,
    responses=problem_responses(NotFound, InvalidRequest, ContentTooLarge, Conflict, TooManyJobs),
)
async def retrain_world(
    world: WorldDep, registry: RegistryDep, response: Response, body: RetrainRequest | None = None
) -> RetrainJob:
    """Scheduled retraining (the second threat model) as a job: fine-tune the model on the
    world's polluted graph; once the job succeeded the world serves the tuned model. The
    fine-tune takes seconds to minutes: poll the job (its URL is in ``Location``)."""
    job = registry.retrains.start(world, (body or RetrainRequest()).epochs)
    response.headers["Location"] = f"/admin/worlds/{world.world_id}/retrain/{job.job_id}"
    return job


JobId = Annotated[str, Path(description="A retrain job of the world.")]


@router.get("/worlds/{world_id}/retrain/{job_id}", responses=problem_responses(NotFound))
async def retrain_job(world: WorldDep, registry: RegistryDep, job_id: JobId) -> RetrainJob:
    """The job's status: queued, running, then succeeded, failed or cancelled."""
    return registry.retrains.job(world, job_id).view


@router.delete(
    "/worlds/{world_id}/retrain/{job_id}", responses=problem_responses(NotFound, Conflict)
)
async def cancel_retrain(world: WorldDep, registry: RegistryDep, job_id: JobId) -> RetrainJob:
    """Cancel a queued or running job; answers once it has stopped (a running fine-tune
    stops at its next training batch), the world keeping the model it had."""
    return await registry.retrains.cancel(registry.retrains.job(world, job_id))


@router.delete("/worlds/{world_id}", status_code=204, responses=WORLD_PROBLEMS)
async def delete_world(world: WorldDep, registry: RegistryDep, metrics: MetricsDep) -> Response:
    await registry.worlds.delete(world)
    metrics.worlds.set(registry.n_worlds)
    return Response(status_code=204)


@router.get("/worlds/{world_id}/injections", responses=WORLD_PROBLEMS)
async def export_injections(world: WorldDep, registry: RegistryDep) -> list[InjectedProfile]:
    """Every injected profile of the world, in injection order."""
    return registry.worlds.export(world)


@router.post("/worlds/{world_id}/evaluate", responses=WORLD_BODY_PROBLEMS)
async def evaluate_world(
    world: WorldDep, registry: RegistryDep, body: EvaluateRequest
) -> EvaluationReport:
    """HR@K and NDCG@K (K = 5, 10, 20) of each target over the evaluation users (never
    pretend users), under the requested protocols (default both), clean model vs this
    world on the same samples."""
    return await registry.evaluation.evaluate(world, body.target_items, body.protocol_set())


@router.post("/worlds/{world_id}/detect", responses=WORLD_BODY_PROBLEMS)
async def detect_in_world(
    world: WorldDep, registry: RegistryDep, body: DetectRequest
) -> DetectionReport:
    """Run a shilling detector over the world's users, real and injected: each user's
    score and flag, and precision, recall, F1 and ROC-AUC against the ledger's record of
    which users were injected. The first call of a detector fits it on the clean
    training graph (seconds on the real pairs), later ones reuse it."""
    return await registry.defences.detect(world, body)
