"""The FastAPI application: routers, error handling, metrics, and the model's lifecycle.

The model and every world in the ledger load on a thread after startup, so ``/livez``
answers at once and ``/readyz`` turns ready when the embeddings are in place. Every error
leaves as an RFC 9457 problem document; no request gets a bare 5xx page.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from recsys_server import __version__
from recsys_server.api.problems import PROBLEM_JSON, LedgerUnavailable, ServiceProblem, problem_of
from recsys_server.api.routes import admin, attack, ops
from recsys_server.artifact import ModelArtifact
from recsys_server.domain_errors import WorldError
from recsys_server.ledger import Ledger
from recsys_server.observability import MetricsMiddleware, ServiceMetrics
from recsys_server.ratelimit import KeyRateLimiter
from recsys_server.settings import Settings
from recsys_server.worlds import WorldRegistry
from shared.schemas import Problem

log = logging.getLogger("recsys_server")


def load_registry(settings: Settings, metrics: ServiceMetrics) -> WorldRegistry:
    """The artifact, the ledger, the clean state and every world replayed (slow: seconds)."""
    artifact = ModelArtifact.load(settings.artifact)
    ledger = Ledger(
        settings.ledger_path, artifact.scenario_fingerprint, settings.ledger_synchronous
    )
    registry = WorldRegistry(
        artifact,
        ledger,
        max_profile_length=settings.max_profile_length,
        max_retrain_jobs=settings.max_retrain_jobs,
        eval_seed=settings.eval_seed,
        metrics=metrics,
        query_lease=settings.query_lease,
    )
    metrics.worlds.set(registry.n_worlds)
    return registry


def create_app(settings: Settings) -> FastAPI:
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                app.state.registry = await asyncio.to_thread(load_registry, settings, metrics)
                log.info("ready: %d worlds", app.state.registry.n_worlds)
            except Exception as exc:  # reported by /readyz and every route, never a crash
                app.state.load_error = f"the model could not be loaded: {exc}"
                log.error(app.state.load_error)
            finally:
                app.state.loaded.set()

        loading = asyncio.create_task(load())
        try:
            yield
        finally:
            await loading
            if app.state.registry is not None:
                await app.state.registry.stop_retrains()
                app.state.registry.close()
                app.state.registry.ledger.close()

    # /docs and /redoc from assets packaged with fastapi-offline (served under
    # /static-offline-docs), not from a CDN: the docs work on a machine without internet;
    # no validator badge either (Swagger UI would send the schema's URL to swagger.io)
    app = FastAPIOffline(
        swagger_ui_parameters={"validatorUrl": None},
        title="CopyAttack target recommender",
        version=__version__,
        description="A PinSage recommender as a black box: attackers inject users and read "
        "top-k lists with a world's key; admins create, reset and evaluate worlds.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = KeyRateLimiter(settings.rate_limit)
    app.state.registry = None
    app.state.load_error = None
    app.state.loaded = asyncio.Event()  # set once loading ended, ready or failed
    app.include_router(attack.attacker_router(settings.max_k))
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _add_problem_handlers(app)
    return app


def _problem_response(
    request: Request, problem: Problem, headers: dict[str, str] | None = None
) -> JSONResponse:
    # an attacker's refused request still reports its key's rate-limit state (the
    # dependency's response, which carried the headers, is dropped when a route raises)
    limits = getattr(request.state, "rate_limit_headers", None) or {}
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        headers={**limits, **(headers or {})},
        media_type=PROBLEM_JSON,
    )


HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (``GET /admin/worlds`` and ``POST
    /admin/worlds`` are two routes), asked of the router itself."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def _add_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceProblem)
    async def service_problem(request: Request, exc: ServiceProblem) -> JSONResponse:
        return _problem_response(request, exc.problem(), exc.headers)

    @app.exception_handler(WorldError)
    async def refused(request: Request, exc: WorldError) -> JSONResponse:
        problem = problem_of(exc)
        return _problem_response(request, problem.problem(), problem.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        problem = Problem(
            type="validation-error",
            title="The request is not valid",
            status=422,
            detail=detail,
            errors=errors,
        )
        return _problem_response(request, problem)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode at all
            problem = Problem(
                type="validation-error",
                title="The request is not valid",
                status=422,
                detail=f"body: {exc.detail} (send UTF-8 JSON)",
            )
            return _problem_response(request, problem)
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        problem = Problem(
            type=kind,
            title=str(exc.detail),
            status=exc.status_code,
            detail=f"{request.method} {request.url.path}: {exc.detail}",
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route of the path
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return _problem_response(request, problem, headers)

    @app.exception_handler(sqlite3.OperationalError)
    async def ledger_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # another process holds the database (a backup, a shell): nothing was acknowledged
        log.warning("ledger unavailable on %s %s: %s", request.method, request.url.path, exc)
        problem = LedgerUnavailable(f"the ledger could not be written ({exc}); retry")
        return _problem_response(request, problem.problem(), problem.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        problem = Problem(
            type="internal-error",
            title="Internal error",
            status=500,
            detail=f"{type(exc).__name__}; the server log has the trace",
        )
        return _problem_response(request, problem)
