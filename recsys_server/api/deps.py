"""Typed dependencies shared by the routes: the registry, the settings, the attacker's
world (authenticated and rate-limited) and the admin check.

All are ``async def``: FastAPI runs a plain ``def`` dependency on its thread pool, a
thread hop per dependency per request that costs more than the work itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from recsys_server.observability import ServiceMetrics
from recsys_server.problems import Forbidden, NotReady, RateLimited, Unauthorized
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


async def current_attacker(request: Request, response: Response, key: ApiKey) -> Attacker:
    """The world of the presented key, after the key's rate limit. One dependency, not a
    chain of them: on the hot path each resolved dependency costs more than the check."""
    registry = await get_registry(request)
    if not key:
        raise Unauthorized("send a world's API key in the X-API-Key header")
    world = registry.world_for_key(key)
    if world is None:
        raise Unauthorized("unknown API key")
    limiter: KeyRateLimiter = request.app.state.limiter
    decision = limiter.check(world.world_id)
    if not decision.allowed:
        raise RateLimited(
            f"more than {decision.limit} requests in the window of this key; retry after "
            f"{decision.headers['Retry-After']} s",
            headers=decision.headers,
        )
    response.headers.update(decision.headers)
    request.state.rate_limit_headers = decision.headers  # for a problem answer, see app.py
    return Attacker(world, registry)


async def require_admin(
    settings: SettingsDep, registry: RegistryDep, bearer: Bearer, key: ApiKey
) -> None:
    token = bearer.credentials if bearer is not None else None
    if token is not None and same_secret(token, settings.admin_token.get_secret_value()):
        return
    if any(k and registry.world_for_key(k) is not None for k in (token, key)):
        raise Forbidden("an attacker key cannot reach /admin")
    raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'", "Bearer")


AttackerDep = Annotated[Attacker, Depends(current_attacker)]
AdminDep = Depends(require_admin)


async def admin_world(world_id: str, registry: RegistryDep) -> World:
    return registry.get(world_id)


WorldDep = Annotated[World, Depends(admin_world)]
