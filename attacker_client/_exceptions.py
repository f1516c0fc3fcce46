"""Every error the SDK raises, in one hierarchy.

    APIError
    ├── APIResponseValidationError  a success answer whose body is not what the API says
    ├── APIStatusError            the server answered with an error status
    │   ├── AuthenticationError        401
    │   ├── PermissionDeniedError      403
    │   ├── NotFoundError              404
    │   ├── ConflictError              409 (an Idempotency-Key reused for another profile)
    │   ├── UnprocessableEntityError   422
    │   ├── RateLimitError             429 rate-limited (retried, honouring Retry-After
    │   │                                   up to the client's max_retry_after)
    │   ├── QuotaExceededError         429 quota-exceeded (a budget is spent; never retried)
    │   └── InternalServerError        5xx
    ├── APIConnectionError        no answer: refused, reset, dropped
    │   └── APITimeoutError       no answer in time
    └── RetrainError              a retrain job ended failed or cancelled

Messages carry the server's problem detail, so ``str(error)`` says what was wrong.
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from shared.schemas import Problem, RetrainJob


class APIError(Exception):
    def __init__(self, message: str, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIResponseValidationError(APIError):
    """The server answered with success, but the body does not parse as the API's answer
    (a proxy's page, another service on the port, a server of another version);
    ``response`` is that answer and ``__cause__`` says what did not parse."""

    def __init__(self, response: httpx.Response, error: ValueError) -> None:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        super().__init__(
            f"{response.status_code} answer to {response.request.method} "
            f"{response.request.url.path} is not the API's: {first}",
            response.request,
        )
        self.response = response
        self.status_code = response.status_code


class APIStatusError(APIError):
    """The server answered with a status >= 400; ``problem`` is its RFC 9457 document."""

    def __init__(self, response: httpx.Response, problem: Problem | None) -> None:
        detail = problem.detail if problem else response.text[:500] or response.reason_phrase
        title = f"{problem.title}: " if problem else ""
        super().__init__(f"{response.status_code} {title}{detail}", response.request)
        self.response = response
        self.status_code = response.status_code
        self.problem = problem


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait, if it said."""
        return retry_after_seconds(self.response)


class QuotaExceededError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class APIConnectionError(APIError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class RetrainError(APIError):
    """A retrain job the client waited for ended without a tuned model; ``job`` says how."""

    def __init__(self, job: RetrainJob) -> None:
        super().__init__(f"retrain job {job.job_id} of world {job.world_id} {job.status}: "
                         f"{job.detail}")  # fmt: skip
        self.job = job


_BY_STATUS: dict[int, type[APIStatusError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error response, with its problem document when it has one."""
    problem = None
    if "json" in response.headers.get("content-type", ""):
        try:
            problem = Problem.model_validate_json(response.content)
        except ValidationError:
            problem = None
    if response.status_code == 429 and problem is not None and problem.type == "quota-exceeded":
        return QuotaExceededError(response, problem)
    if response.status_code >= 500:
        return InternalServerError(response, problem)
    return _BY_STATUS.get(response.status_code, APIStatusError)(response, problem)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:  # an HTTP date; this server never sends one
        return None
