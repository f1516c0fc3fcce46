"""Typed dependencies shared by the routes: the registry, the settings, the attacker's
world (authenticated and rate-limited) and the admin check; and the route classes that
check those credentials before a request body is read.

All are ``async def``: FastAPI runs a plain ``def`` dependency on its thread pool, a
thread hop per dependency per request that costs more than the work itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Receive, Scope, Send

from recsys_server.api.problems import (
    ContentTooLarge,
    Forbidden,
    NotReady,
    RateLimited,
    Unauthorized,
)
from recsys_server.observability import ServiceMetrics
from recsys_server.ratelimit import KeyRateLimiter
from recsys_server.security import same_secret
from recsys_server.settings import Settings
from recsys_server.worlds import World, WorldRegistry

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The key of one world (attackers)."
)
admin_bearer = HTTPBearer(auto_error=False, description="The admin token.")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_registry(request: Request) -> WorldRegistry:
    registry = request.app.state.registry
    if registry is None:
        raise NotReady(request.app.state.load_error or "the model and embeddings are loading")
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RegistryDep = Annotated[WorldRegistry, Depends(get_registry)]
ApiKey = Annotated[str | None, Security(api_key_header)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(admin_bearer)]


@dataclass(frozen=True)
class Attacker:
    """The caller of an attacker route: its world and the registry that serves it."""

    world: World
    registry: WorldRegistry


async def authenticate_attacker(request: Request, key: str | None) -> Attacker:
    """The world of the presented key, after the key's rate limit; decided once per
    request (a route's guard and its dependency share the answer). One function, not a
    chain of dependencies: on the hot path each resolved dependency costs more than this."""
    attacker: Attacker | None = getattr(request.state, "attacker", None)
    if attacker is not None:
        return attacker
    registry = await get_registry(request)
    if not key:
        raise Unauthorized("send a world's API key in the X-API-Key header")
    world = registry.worlds.for_key(key)
    if world is None:
        raise Unauthorized("unknown API key")
    limiter: KeyRateLimiter = request.app.state.limiter
    decision = limiter.check(world.world_id)
    request.state.rate_limit_headers = decision.headers  # for a problem answer, see app.py
    if not decision.allowed:
        raise RateLimited(
            f"more than {decision.limit} requests in the window of this key; retry after "
            f"{decision.headers['Retry-After']} s",
            headers=decision.headers,
        )
    request.state.attacker = attacker = Attacker(world, registry)
    return attacker


async def current_attacker(request: Request, response: Response, key: ApiKey) -> Attacker:
    attacker = await authenticate_attacker(request, key)
    response.headers.update(request.state.rate_limit_headers)
    return attacker


async def require_admin(request: Request, bearer: Bearer) -> None:
    """The admin token. The routes declare the bearer scheme alone: a world's key (as
    ``X-API-Key`` or as the bearer token) is refused with 403, never accepted."""
    settings: Settings = request.app.state.settings
    registry = await get_registry(request)
    token = bearer.credentials if bearer is not None else None
    if token is not None and same_secret(token, settings.admin_token.get_secret_value()):
        return
    key = request.headers.get(api_key_header.model.name)
    if any(k and registry.worlds.for_key(k) is not None for k in (token, key)):
        raise Forbidden("an attacker key cannot reach /admin")
    raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'", "Bearer")


AttackerDep = Annotated[Attacker, Depends(current_attacker)]
AdminDep = Depends(require_admin)


async def admin_world(world_id: str, registry: RegistryDep) -> World:
    return registry.worlds.get(world_id)


WorldDep = Annotated[World, Depends(admin_world)]


# --- credentials before the body ----------------------------------------------------
# FastAPI reads and parses a route's body before it resolves the route's dependencies, so
# a request without credentials would be read whole (any size) before its 401. A route of
# these classes checks the credentials first, then reads the body itself, at most
# ``Settings.body_limit`` bytes (413 past it, also when Content-Length is absent or lies),
# and hands it to FastAPI. A body under the cap parses in a few milliseconds at most
# (docs/service.md, "Limits, errors and malformed HTTP"), so it parses on the event loop.

Guard = Callable[[Request], Awaitable[object]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class _ReadBody(Request):
    """The request, its body already read (under the cap)."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._read = body

    async def body(self) -> bytes:
        return self._read


async def read_capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ContentTooLarge(f"the body declares {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ContentTooLarge(f"the body is longer than the limit, {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def guarded_route(guard: Guard) -> type[APIRoute]:
    """A route class whose routes with a body run ``guard`` before reading the body."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()
            if self.body_field is None:  # no body is read: the dependencies check
                return handler

            async def guarded(request: Request) -> Response:
                await guard(request)
                settings: Settings = request.app.state.settings
                limit = settings.body_limit((await get_registry(request)).data.n_items)
                body = await read_capped_body(request, limit)
                return await handler(_ReadBody(request, body))

            return guarded

    return GuardedRoute


async def _attacker_guard(request: Request) -> None:
    await authenticate_attacker(request, await api_key_header(request))


async def _admin_guard(request: Request) -> None:
    await require_admin(request, await admin_bearer(request))


AttackerRoute = guarded_route(_attacker_guard)
AdminRoute = guarded_route(_admin_guard)


# --- a hand-written hot path ----------------------------------------------------------
# Per request, FastAPI resolves a route's dependencies and parameters with generic
# machinery: on /topk that cost more than the model's own work (docs/service.md, "Service
# speed").
# A route of these classes first offers each request of its methods to ``fast``, which
# reads by hand only what is plainly valid and answers it; anything else (a value to
# refuse, a query it does not know) it declines with None, and the route's FastAPI handler
# answers as always. So every refusal is still FastAPI's own, and the route, its endpoint
# and its OpenAPI operation are unchanged.

FastPath = Callable[[Request], Awaitable[Response | None]]


def fast_path_route(route_class: type[APIRoute], fast: FastPath) -> type[APIRoute]:
    """``route_class`` whose routes try ``fast`` before their FastAPI handler."""

    # mypy cannot check a class whose base is a variable; route_class is an APIRoute subclass
    class FastPathRoute(route_class):  # type: ignore[valid-type,misc]
        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] in self.methods:
                response = await fast(Request(scope, receive, send))
                if response is not None:
                    await response(scope, receive, send)
                    return
            await super().handle(scope, receive, send)

    return FastPathRoute
