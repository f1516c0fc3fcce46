"""Every setting of the service, in one place: from ``RECSYS_*`` environment variables, a
``.env`` file, or ``recsys-server serve`` flags (which override both)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_k: int = Field(default=100, ge=1)
    max_profile_length: int = Field(default=1_000, ge=1)
    # per attacker key; several limits separated by ';' ("200/second;6000/minute"), a
    # moving window each, so up to the per-second amount may arrive at once (the burst)
    rate_limit: str = "200/second"
    eval_seed: int = Field(default=0, ge=0, description="Seed of the evaluation's negatives.")
    compute_threads: int = Field(
        default=1, ge=1, description="BLAS/torch threads of each of the two compute workers."
    )

    @field_validator("rate_limit")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '200/second': {value!r} ({exc})") from None
        return value
