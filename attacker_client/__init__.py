"""The attacker: SDK, CopyAttack agent, baselines and the experiment harness.

The SDK is the attacker's whole view of the target::

    from attacker_client import AdminClient, Client

    with AdminClient(url, admin_token) as admin:
        world = admin.create_world(n_pretend_users=50, seed=0)
    with Client(url, world.api_key) as client:
        user = client.inject_user([12, 7, 99]).user_id
        print(client.topk(world.pretend_users[0], k=20).items, client.stats)
"""

from attacker_client._client import (
    AdminClient,
    AsyncAdminClient,
    AsyncClient,
    Client,
    ClientStats,
)
from attacker_client._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RetrainError,
    UnprocessableEntityError,
)
from shared.schemas import (
    Budgets,
    Counts,
    EvaluationReport,
    InjectedProfile,
    InjectUserResponse,
    ModelInfo,
    RetrainJob,
    TopKResponse,
    WorldCreated,
    WorldUsage,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AdminClient",
    "AsyncAdminClient",
    "AsyncClient",
    "AuthenticationError",
    "Budgets",
    "Client",
    "ClientStats",
    "ConflictError",
    "Counts",
    "EvaluationReport",
    "InjectUserResponse",
    "InjectedProfile",
    "InternalServerError",
    "ModelInfo",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetrainError",
    "RetrainJob",
    "TopKResponse",
    "UnprocessableEntityError",
    "WorldCreated",
    "WorldUsage",
]
