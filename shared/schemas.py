"""The wire contract between the recommender service and its clients, in one place.

The server validates requests and serialises responses with these models and the SDK
parses responses with the same ones, so the two sides cannot drift apart. Errors are RFC
9457 problem documents (:class:`Problem`); ``type`` names the kind of problem (for
example ``quota-exceeded``) so clients can tell them apart without parsing prose.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

ItemId = Annotated[int, Field(ge=0, description="A target-catalogue item id.")]
UserId = Annotated[int, Field(ge=0, description="A target-platform user id.")]


def _decimal_digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be an integer in plain decimal digits")
    return value


# An integer of a URL (path or query) arrives as text: plain decimal digits only, so
# "3.0", "+3", " 3" or "3_0" (which pydantic's lax mode reads as 3 or 30) are refused.
# Usage: Annotated[int, Path(ge=0), DECIMAL_DIGITS].
DECIMAL_DIGITS = BeforeValidator(_decimal_digits)
MAX_BUDGET = 2**53  # stored as SQLite integers; far beyond any experiment


class _Strict(BaseModel):
    """A request body: unknown fields are refused, and so is every value of another JSON
    type (strict mode): ``true``, ``"3"`` or ``3.0`` is not an integer id, ``1`` is not a
    boolean. The SDK validates with the same models, so both sides refuse the same."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --- attacker-facing ---------------------------------------------------------------


class Counts(BaseModel):
    """Queries (``/topk`` calls), injected profiles, and items over all injected profiles."""

    queries: int
    injections: int
    items: int


class InjectUserRequest(_Strict):
    items: list[ItemId] = Field(
        min_length=1, description="The profile: target item ids, oldest first, no repeats."
    )


class InjectUserResponse(BaseModel):
    user_id: UserId
    n_items: int
    remaining: Counts


class TopKResponse(BaseModel):
    user_id: UserId
    items: list[ItemId] = Field(description="Best first; never an item the user already has.")


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(description="The kind of problem, e.g. quota-exceeded, rate-limited.")
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field validation errors, for validation-error."
    )


# --- admin ---------------------------------------------------------------------------


class Budgets(_Strict):
    """A world's limits: ``/topk`` calls, injected profiles, and items over all profiles."""

    queries: int = Field(default=100_000, ge=0, le=MAX_BUDGET)
    injections: int = Field(default=10_000, ge=0, le=MAX_BUDGET)
    items: int = Field(default=1_000_000, ge=0, le=MAX_BUDGET)


DetectorName = Literal["pca", "degree", "ecod", "iforest"]
DETECTOR_NAMES: tuple[DetectorName, ...] = ("pca", "degree", "ecod", "iforest")
Defence = Literal["none", "pca", "degree", "ecod", "iforest"]
DEFENCES: tuple[Defence, ...] = ("none", *DETECTOR_NAMES)
DefenceThreshold = Annotated[
    float | None,
    Field(
        default=None,
        allow_inf_nan=False,
        description="Quarantine profiles the defence scores above this; default: the "
        "detector's own threshold (the 99th percentile of the real users' scores).",
    ),
]


class CreateWorldRequest(_Strict):
    n_pretend_users: int = Field(
        default=50, ge=1, description="Real target users handed to the attacker."
    )
    seed: int = Field(
        default=0, ge=0, le=2**63 - 1, description="Chooses the pretend users from the pool."
    )
    budgets: Budgets = Field(default_factory=Budgets)
    defence: Defence = Field(
        default="none",
        description="A shilling detector screening each injection: a profile it flags is "
        "quarantined (recorded, answered like any other, kept out of the recommender).",
    )
    defence_threshold: DefenceThreshold = None

    @model_validator(mode="after")
    def _threshold_needs_a_defence(self) -> Self:
        if self.defence == "none" and self.defence_threshold is not None:
            raise ValueError("defence_threshold needs a defence (defence is 'none')")
        return self


class WorldCreated(BaseModel):
    world_id: str
    api_key: str = Field(description="Shown once; the server keeps only its hash.")
    pretend_users: list[UserId]
    budgets: Budgets
    defence: Defence = "none"
    defence_threshold: float | None = None


class WorldUsage(BaseModel):
    world_id: str
    pretend_users: list[UserId]
    budgets: Budgets
    used: Counts = Field(description="Counted against the budgets (since the last restore).")
    total: Counts = Field(description="Since the world was created, across resets.")
    remaining: Counts
    injected_users: int = Field(description="Injected users live in the world now.")
    embedding_epoch: int = Field(description="Incremental refreshes applied to the world.")
    defence: Defence = "none"
    defence_threshold: float | None = Field(
        default=None, description="The threshold in force (None: no defence)."
    )
    quarantined: int = Field(default=0, description="Injections the defence kept out.")


class ResetRequest(_Strict):
    restore_budgets: bool = Field(
        default=False,
        description="Also zero the budget counters (lifetime totals are always kept).",
    )


class RetrainRequest(_Strict):
    epochs: int = Field(default=3, ge=1, le=50, description="Fine-tuning epochs.")


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})


class RetrainJob(BaseModel):
    """A scheduled retrain of one world, run in the background: poll it until its status
    is finished (succeeded, failed or cancelled)."""

    job_id: str
    world_id: str
    epochs: int
    status: JobStatus
    created_at: float = Field(description="Unix time the job was accepted.")
    started_at: float | None = Field(default=None, description="When the fine-tune began.")
    finished_at: float | None = None
    embedding_epoch: int | None = Field(
        default=None, description="The world's embedding epoch once it serves the tuned model."
    )
    detail: str | None = Field(default=None, description="Why it failed or was cancelled.")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class InjectedProfile(BaseModel):
    user_id: UserId
    items: list[ItemId]
    idempotency_key: str | None
    created_at: float = Field(description="Unix time the injection was acknowledged.")
    quarantined: bool = Field(default=False, description="Kept out by the world's defence.")


Protocol = Literal["sampled", "full"]
PROTOCOLS: tuple[Protocol, ...] = ("sampled", "full")  # the canonical order


class EvaluateRequest(_Strict):
    target_items: list[ItemId] = Field(min_length=1, max_length=100)
    protocols: list[Protocol] = Field(
        default=list(PROTOCOLS),
        min_length=1,
        max_length=2,
        description="'sampled' (the held-out item among 100 sampled items) and/or 'full' "
        "(among the whole catalogue); the sampled protocol alone costs a fraction.",
    )

    def protocol_set(self) -> tuple[str, ...]:
        """The requested protocols, each once, in the canonical order."""
        return tuple(p for p in PROTOCOLS if p in self.protocols)


# --- evaluation: the one spelling of each cohort and metric name ------------------------

KS = (5, 10, 20)  # the cut-offs K of HR@K and NDCG@K


def hit_rate_at(k: int) -> str:
    return f"HR@{k}"


def ndcg_at(k: int) -> str:
    return f"NDCG@{k}"


HR_20, NDCG_20 = hit_rate_at(20), ndcg_at(20)  # the paper's headline metrics
# every metric an evaluation reports, in the order of the paper's Table 2
METRIC_NAMES = (*(hit_rate_at(k) for k in reversed(KS)), *(ndcg_at(k) for k in reversed(KS)))
Metrics = dict[str, float]  # metric name ("HR@10") -> value

Cohort = Literal["all", "3+"]
ALL_USERS: Cohort = "all"  # every evaluation user
ACTIVE_USERS: Cohort = "3+"  # those with 3+ training interactions (the paper's second cohort)
COHORTS: tuple[Cohort, ...] = (ALL_USERS, ACTIVE_USERS)


class CohortEvaluation(BaseModel):
    n_users: int = Field(description="Evaluation users of the cohort who never had the item.")
    before: dict[str, Metrics] = Field(description="Clean model: protocol -> metrics.")
    after: dict[str, Metrics] = Field(description="This world: protocol -> metrics.")


class TargetEvaluation(BaseModel):
    item: ItemId
    cohorts: dict[Cohort, CohortEvaluation] = Field(
        description=f"{ALL_USERS!r} evaluation users, and those with {ACTIVE_USERS!r} "
        "training interactions."
    )


class EvaluationReport(BaseModel):
    world_id: str
    seed: int = Field(description="Seed of the sampled negatives, the same before and after.")
    targets: list[TargetEvaluation]
    mean: dict[Cohort, CohortEvaluation] = Field(description="Per cohort, the mean over targets.")


class ModelInfo(BaseModel):
    version: str
    scenario_fingerprint: str
    model_fingerprint: str  # sha256 of the served weights
    victim: str = "pinsage"  # the recommender's family (recsys_server.victims)
    config: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int
    n_items: int
    worlds: int


# --- detection -----------------------------------------------------------------------


class DetectRequest(_Strict):
    detector: DetectorName = Field(
        description="'pca' (PCA-VarSelect), 'degree' (DegreeSAD-style, supervised), "
        "'ecod' or 'iforest' (pyod) on the profile features."
    )
    threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Flag users scoring above this; default: the detector's own, the 99th "
        "percentile of the real users' scores.",
    )
    include_users: bool = Field(default=True, description="Also list every user's score.")


class UserScore(BaseModel):
    user_id: UserId
    score: float = Field(description="Higher is more suspicious.")
    flagged: bool
    injected: bool = Field(description="The ledger's ground truth.")


class DetectionReport(BaseModel):
    world_id: str
    detector: DetectorName
    threshold: float
    n_users: int = Field(description="Real users with a training profile, plus injected users.")
    n_injected: int
    n_flagged: int
    precision: float = Field(description="0 when nothing is flagged.")
    recall: float = Field(description="0 when nothing was injected.")
    f1: float
    roc_auc: float | None = Field(description="None unless both real and injected users.")
    false_positive_rate: float = Field(description="Share of the real users flagged.")
    js_distance: float | None = Field(
        description="Jensen-Shannon distance (base 2) between the item-popularity "
        "histograms of the injected and the real profiles; None when nothing was injected."
    )
    tv_distance: float | None = Field(description="Total-variation distance, likewise.")
    best_f1: float | None = Field(
        default=None,
        description="The highest F1 of any threshold (an upper bound: it knows the truth).",
    )
    best_threshold: float | None = Field(default=None, description="The threshold of best_f1.")
    users: list[UserScore] | None = None
