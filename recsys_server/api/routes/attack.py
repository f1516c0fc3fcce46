"""The attacker's whole view of the target: inject a user, read a user's top-k."""

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query

from recsys_server.api.deps import AttackerDep, AttackerRoute
from recsys_server.problems import (
    Conflict,
    ContentTooLarge,
    InvalidRequest,
    LedgerUnavailable,
    NotFound,
    NotReady,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    problem_responses,
)
from shared.schemas import DECIMAL_DIGITS, InjectUserRequest, InjectUserResponse, TopKResponse

MAX_USER_ID = 2**53  # JSON-safe integers; larger ids cannot exist


def attacker_router(max_k: int) -> APIRouter:
    router = APIRouter(tags=["attacker"], route_class=AttackerRoute)
    default_k = min(10, max_k)

    @router.post(
        "/inject_user",
        status_code=201,
        responses=problem_responses(
            Unauthorized,
            Conflict,
            ContentTooLarge,
            InvalidRequest,
            RateLimited,
            QuotaExceeded,
            NotReady,
            LedgerUnavailable,
        ),
    )
    async def inject_user(
        body: InjectUserRequest,
        attacker: AttackerDep,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=200,
                description="A retry with the same key returns the first result.",
            ),
        ] = None,
    ) -> InjectUserResponse:
        """Inject a user holding ``items`` (oldest first). The incremental refresh runs
        before the answer, so the next ``/topk`` already sees the new user."""
        return await attacker.registry.inject(attacker.world, body.items, idempotency_key)

    @router.get(
        "/topk/{user_id}",
        responses=problem_responses(
            Unauthorized,
            NotFound,
            InvalidRequest,
            RateLimited,
            QuotaExceeded,
            NotReady,
            LedgerUnavailable,
        ),
    )
    async def topk(
        user_id: Annotated[int, Path(ge=0, le=MAX_USER_ID), DECIMAL_DIGITS],
        attacker: AttackerDep,
        k: Annotated[int, Query(ge=1, le=max_k), DECIMAL_DIGITS] = default_k,
    ) -> TopKResponse:
        """The ``k`` items the recommender ranks highest for the user, best first, among
        items the user does not have. One call is one query of the world's budget."""
        items = attacker.registry.topk(attacker.world, user_id, k)
        return TopKResponse(user_id=user_id, items=items)

    return router
