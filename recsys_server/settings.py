"""Every setting of the service, in one place: from ``RECSYS_*`` environment variables, a
``.env`` file, or ``recsys-server serve`` flags (which override both)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# the longest honest body is a profile at the length limit: 16 bytes per item leave
# room for a 5-digit id, ", " and pretty-printed indentation ('\n    12345,' is 11)
BYTES_PER_ITEM = 16
BODY_SLACK_BYTES = 4096  # the braces, the field name, the other (short) request bodies


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=".env", extra="ignore")

    artifact: Path = Field(description="Model artifact written by `recsys-server train`.")
    admin_token: SecretStr = Field(min_length=16, description="Bearer token of /admin routes.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    ledger_path: Path = Field(default=Path("ledger.sqlite3"), description="SQLite ledger file.")
    # NORMAL: an acknowledged write survives a killed server (WAL in the OS page cache),
    # not a power cut; FULL also survives a power cut, one fsync per write
    ledger_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # queries of a world counted as spent in one ledger write, then answered from memory:
    # a crash can cost a world at most this many minus one unanswered queries; 1 writes
    # once per query (exact across crashes, at the cost README "Service speed" measures)
    query_lease: int = Field(default=64, ge=1)
    max_k: int = Field(default=100, ge=1)
    max_profile_length: int = Field(default=1_000, ge=1)
    # Largest request body read, in bytes; past it 413, and a body under it parses in a
    # few milliseconds at most, on the event loop. Default: BYTES_PER_ITEM per item of
    # the longest profile accepted (a profile holds each catalogue item at most once and
    # at most max_profile_length items) + BODY_SLACK_BYTES: 20,096 bytes by default.
    max_body_bytes: int | None = Field(default=None, ge=1024)
    # per attacker key; several limits separated by ';' ("200/second;6000/minute"), a
    # moving window each, so up to the per-second amount may arrive at once (the burst)
    rate_limit: str = "200/second"
    eval_seed: int = Field(default=0, ge=0, description="Seed of the evaluation's negatives.")
    # Retrain jobs accepted and not finished (queued or running), over all worlds; past
    # it POST .../retrain answers 429 too-many-jobs. They run one at a time on their own
    # thread (a fine-tune uses every compute thread it is given, and one at a time keeps
    # torch's process-wide seed each one sets from being drawn by another).
    max_retrain_jobs: int = Field(
        default=4, ge=1, description="Retrain jobs queued or running at once (all worlds)."
    )
    compute_threads: int = Field(
        default=1, ge=1, description="BLAS/torch threads of each of the two compute workers."
    )

    def body_limit(self, n_items: int) -> int:
        """The largest request body read, for a catalogue of ``n_items``."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return BYTES_PER_ITEM * min(n_items, self.max_profile_length) + BODY_SLACK_BYTES

    @field_validator("rate_limit")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '200/second': {value!r} ({exc})") from None
        return value
