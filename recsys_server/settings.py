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

    # every description is also the help of the setting's `recsys-server serve` option
    artifact: Path = Field(description="model file written by `recsys-server train` or `prepare`")
    # never a flag: a flag would show in process listings
    admin_token: SecretStr = Field(
        min_length=16,
        description="bearer token of the /admin routes",
        json_schema_extra={"environment_only": True},
    )
    host: str = Field(default="127.0.0.1", description="interface to listen on")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to listen on")
    ledger_path: Path = Field(
        default=Path("ledger.sqlite3"),
        description="SQLite ledger file",
        json_schema_extra={"flag": "--ledger"},
    )
    # NORMAL: an acknowledged write survives a killed server (WAL in the OS page cache),
    # not a power cut; FULL also survives a power cut, one fsync per write
    ledger_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="the ledger's SQLite synchronous mode: NORMAL survives a killed server, "
        "FULL a power cut too (an fsync per write)",
    )
    # answered from memory once counted: 1 writes once per query (exact across crashes,
    # at the cost docs/service.md measures)
    query_lease: int = Field(
        default=64,
        ge=1,
        description="queries of a world counted in one ledger write; a crash can cost a "
        "world at most this many minus one (1: one write per query)",
    )
    max_k: int = Field(default=100, ge=1, description="largest k of /topk")
    max_profile_length: int = Field(
        default=1_000, ge=1, description="most items of an injected profile"
    )
    # a body under it parses in a few milliseconds at most, on the event loop. Default:
    # BYTES_PER_ITEM per item of the longest profile accepted (a profile holds each
    # catalogue item at most once and at most max_profile_length items) + BODY_SLACK_BYTES
    max_body_bytes: int | None = Field(
        default=None,
        ge=1024,
        description=f"largest request body read, in bytes; past it 413 (default: "
        f"{BYTES_PER_ITEM} per item of the longest profile accepted + {BODY_SLACK_BYTES})",
    )
    # a moving window each, so up to the per-second amount may arrive at once (the burst)
    rate_limit: str = Field(
        default="200/second",
        description="per attacker key; several limits separated by ';', "
        "e.g. '200/second;6000/minute'",
    )
    eval_seed: int = Field(default=0, ge=0, description="seed of the evaluation's negatives")
    # past it POST .../retrain answers 429 too-many-jobs. They run one at a time on their
    # own thread (a fine-tune uses every compute thread it is given, and one at a time
    # keeps torch's process-wide seed each one sets from being drawn by another).
    max_retrain_jobs: int = Field(
        default=4, ge=1, description="retrain jobs queued or running at once (all worlds)"
    )
    compute_threads: int = Field(
        default=1, ge=1, description="BLAS/torch threads of each of the two compute workers"
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
