"""The one mapping of the domain's errors to RFC 9457 problems: every error the domain
can raise has its problem, with the status, type and headers its routes document."""

from __future__ import annotations

import pytest

from recsys_server import domain_errors as errors
from recsys_server.api.problems import problem_of

# one of each error the domain raises, and the (status, type) it is answered with
ANSWERS: list[tuple[errors.WorldError, int, str]] = [
    (errors.WorldNotFound("w_1"), 404, "not-found"),
    (errors.KeyRevoked(), 401, "unauthorized"),
    (errors.UserNotFound(7), 404, "not-found"),
    (errors.RetrainJobNotFound("w_1", "j_1"), 404, "not-found"),
    (errors.UnknownItems("items: 1 unknown item ids"), 422, "validation-error"),
    (errors.InvalidProfile("items: repeated item ids [3]"), 422, "validation-error"),
    (errors.PretendPoolTooSmall("n_pretend_users is 9"), 422, "validation-error"),
    (errors.NoEvaluationUsers("target_items: every evaluation user"), 422, "validation-error"),
    (errors.BudgetExhausted("the query budget of this world is spent"), 429, "quota-exceeded"),
    (errors.IdempotencyKeyReused("k"), 409, "conflict"),
    (errors.RetrainUnderWay("already has retrain job j_1"), 409, "conflict"),
    (errors.RetrainFinished("retrain job j_1 already succeeded"), 409, "conflict"),
    (errors.RetrainQueueFull("2 retrain jobs are queued or running", 10), 429, "too-many-jobs"),
]


def _leaves(cls: type[errors.WorldError]) -> set[type[errors.WorldError]]:
    """The module's errors without subclasses (what the domain raises)."""
    subclasses = [c for c in cls.__subclasses__() if c.__module__ == errors.__name__]
    return {cls} if not subclasses else set().union(*map(_leaves, subclasses))


def test_every_domain_error_is_listed() -> None:
    assert {type(error) for error, _, _ in ANSWERS} == _leaves(errors.WorldError)


@pytest.mark.parametrize(("error", "status", "kind"), ANSWERS, ids=lambda a: type(a).__name__)
def test_a_domain_error_becomes_its_problem_with_its_message_as_detail(
    error: errors.WorldError, status: int, kind: str
) -> None:
    problem = problem_of(error).problem()
    assert (problem.status, problem.type, problem.detail) == (status, kind, str(error))


def test_the_problems_headers_say_whether_and_when_to_retry() -> None:
    assert problem_of(errors.KeyRevoked()).headers == {
        "WWW-Authenticate": 'ApiKey header="X-API-Key"'
    }
    assert problem_of(errors.BudgetExhausted("spent")).headers == {"x-should-retry": "false"}
    assert problem_of(errors.RetrainQueueFull("full", 10)).headers == {"Retry-After": "10"}


def test_an_error_left_unmapped_is_refused_not_answered_as_something_else() -> None:
    class Unmapped(errors.WorldError):
        pass

    with pytest.raises(TypeError, match="no problem for Unmapped"):
        problem_of(Unmapped("?"))
