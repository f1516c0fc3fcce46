"""Every error the service answers with, as an RFC 9457 problem: its status, its ``type``
(what clients branch on) and a detail that names what was wrong; and the one mapping of
the domain's errors (``recsys_server.domain_errors``) to them."""

from __future__ import annotations

from typing import Any

from recsys_server import domain_errors as errors
from shared.schemas import Problem

PROBLEM_JSON = "application/problem+json"


class ServiceProblem(Exception):
    status = 500
    type = "internal-error"
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors

    def problem(self) -> Problem:
        return Problem(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            errors=self.errors,
        )


class Unauthorized(ServiceProblem):
    status, type, title = 401, "unauthorized", "Missing or unknown credentials"

    def __init__(self, detail: str, scheme: str = 'ApiKey header="X-API-Key"') -> None:
        super().__init__(detail, headers={"WWW-Authenticate": scheme})


class Forbidden(ServiceProblem):
    status, type, title = 403, "forbidden", "Not allowed with these credentials"


class NotFound(ServiceProblem):
    status, type, title = 404, "not-found", "No such resource"


class Conflict(ServiceProblem):
    status, type, title = 409, "conflict", "Conflicts with an earlier request"


class InvalidRequest(ServiceProblem):
    status, type, title = 422, "validation-error", "The request is not valid"


class ContentTooLarge(ServiceProblem):
    status, type, title = 413, "content-too-large", "The request body is too large"


class RateLimited(ServiceProblem):
    status, type, title = 429, "rate-limited", "Too many requests"


class QuotaExceeded(ServiceProblem):
    status, type, title = 429, "quota-exceeded", "A budget of this world is spent"

    def __init__(self, detail: str) -> None:
        # retrying cannot help: the budget does not refill
        super().__init__(detail, headers={"x-should-retry": "false"})


class TooManyJobs(ServiceProblem):
    status, type, title = 429, "too-many-jobs", "Too many retrain jobs queued or running"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class NotReady(ServiceProblem):
    status, type, title = 503, "not-ready", "The model is still loading"


class LedgerUnavailable(ServiceProblem):
    status, type, title = 503, "ledger-unavailable", "The ledger cannot be written now"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


def problem_of(error: errors.WorldError) -> ServiceProblem:
    """The problem a domain error is answered with; its message is the detail."""
    detail = str(error)
    match error:
        case errors.KeyRevoked():  # to its attacker, a deleted world's key is unknown
            return Unauthorized(detail)
        case errors.WorldNotFound() | errors.UserNotFound() | errors.RetrainJobNotFound():
            return NotFound(detail)
        case errors.InvalidInput():
            return InvalidRequest(detail)
        case errors.BudgetExhausted():
            return QuotaExceeded(detail)
        case errors.RetrainQueueFull():
            return TooManyJobs(detail, error.retry_after)
        case errors.IdempotencyKeyReused() | errors.RetrainUnderWay() | errors.RetrainFinished():
            return Conflict(detail)
    raise TypeError(f"no problem for {type(error).__name__}")  # a new error left unmapped


def problem_responses(*problems: type[ServiceProblem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting these problems, in their real content type."""
    out: dict[int | str, dict[str, Any]] = {}
    for problem in problems:
        titles = [p.title for p in problems if p.status == problem.status]
        out[problem.status] = {
            "description": "; ".join(titles),
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
