"""The attacker's whole view of the target: inject a user, read a user's top-k."""

import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from recsys_server.api.deps import (
    AttackerDep,
    AttackerRoute,
    api_key_header,
    authenticate_attacker,
    fast_path_route,
)
from recsys_server.api.problems import (
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
        return await attacker.registry.attacks.inject(attacker.world, body.items, idempotency_key)

    async def topk(
        user_id: Annotated[int, Path(ge=0, le=MAX_USER_ID), DECIMAL_DIGITS],
        attacker: AttackerDep,
        k: Annotated[int, Query(ge=1, le=max_k), DECIMAL_DIGITS] = default_k,
    ) -> TopKResponse:
        """The ``k`` items the recommender ranks highest for the user, best first, among
        items the user does not have. One call is one query of the world's budget."""
        items = attacker.registry.attacks.topk(attacker.world, user_id, k)
        return TopKResponse(user_id=user_id, items=items)

    async def plain_topk(request: Request) -> Response | None:
        """``topk`` without FastAPI's resolution, for the plain request (``?k=`` digits
        or no query, a user id in digits, both in range); None for anything else."""
        user = _plain_int(request.scope["path_params"]["user_id"], 0, MAX_USER_ID)
        query: bytes = request.scope["query_string"]
        if not query:
            k: int | None = default_k
        else:
            name, _, value = query.partition(b"=")
            k = _plain_int(value.decode("latin-1"), 1, max_k) if name == b"k" else None
        if user is None or k is None:
            return None
        attacker = await authenticate_attacker(
            request, request.headers.get(api_key_header.model.name)
        )
        items = attacker.registry.attacks.topk(attacker.world, user, k)
        # the bytes FastAPI writes for TopKResponse (tests compare the two paths)
        body = json.dumps({"user_id": user, "items": items}, separators=(",", ":"))
        return Response(
            body, media_type="application/json", headers=request.state.rate_limit_headers
        )

    router.add_api_route(
        "/topk/{user_id}",
        topk,
        methods=["GET"],
        route_class_override=fast_path_route(AttackerRoute, plain_topk),
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

    return router


def _plain_int(text: str, low: int, high: int) -> int | None:
    """``text`` as an integer in ``low..high`` if it is plain decimal digits (what
    ``DECIMAL_DIGITS`` lets through to pydantic), else None."""
    # a value past 16 digits is out of range anyway; int() of thousands of digits raises
    if not (len(text) <= 16 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if low <= value <= high else None
