"""API keys and the admin token: keys are random, stored only as their SHA-256 hash, and
every comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "ca_"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # a 256-bit random key needs no slow hash: brute force is out of reach either way
    return hashlib.sha256(key.encode()).hexdigest()


def same_secret(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())
