"""What can go wrong in the worlds' domain, named for what happened. The domain raises
these and knows nothing of HTTP; the API edge (``recsys_server.api.problems``) maps each
to its RFC 9457 problem. The message is the problem's detail, for whoever sent the
request."""

from __future__ import annotations


class WorldError(Exception):
    """Base class: a request the worlds' domain refuses; the message says why."""


class WorldNotFound(WorldError):
    """No world has this id (or it was deleted while a writer waited for it)."""

    def __init__(self, world_id: str) -> None:
        super().__init__(f"no world {world_id!r}")


class KeyRevoked(WorldError):
    """The world of an attacker's key was deleted while its request was under way."""

    def __init__(self) -> None:
        super().__init__("unknown API key")


class UserNotFound(WorldError):
    """A user the attacker may not query: neither a pretend user nor one it injected."""

    def __init__(self, user: int) -> None:
        super().__init__(f"no user {user}")


class RetrainJobNotFound(WorldError):
    def __init__(self, world_id: str, job_id: str) -> None:
        super().__init__(f"world {world_id!r} has no retrain job {job_id!r}")


class InvalidInput(WorldError):
    """Input the domain cannot act on (beyond what the wire schema checks)."""


class UnknownItems(InvalidInput):
    """Item ids past the catalogue."""


class InvalidProfile(InvalidInput):
    """An injected profile too long or holding an item twice."""


class PretendPoolTooSmall(InvalidInput):
    """More pretend users asked for than the pool holds."""


class NoEvaluationUsers(InvalidInput):
    """A target every evaluation user already holds: nothing to measure."""


class BudgetExhausted(WorldError):
    """A budget of the world is spent (it never refills by waiting)."""


class IdempotencyKeyReused(WorldError):
    """An Idempotency-Key sent again with another profile."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was used for another profile")


class RetrainUnderWay(WorldError):
    """The world already has an unfinished retrain job (one at a time)."""


class RetrainFinished(WorldError):
    """A retrain job asked to cancel has already finished."""


class RetrainQueueFull(WorldError):
    """As many retrain jobs are unfinished as the service allows."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds worth waiting before asking again
