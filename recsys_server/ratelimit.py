"""Per-key rate limiting with the ``limits`` library (moving windows, in memory), and the
headers that tell a client where it stands: the IETF draft ``RateLimit`` /
``RateLimit-Policy`` fields (draft-ietf-httpapi-ratelimit-headers-07) and the legacy
``X-RateLimit-*`` ones."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int  # of the tightest limit
    remaining: int
    reset_seconds: float  # until the tightest window frees a request
    headers: dict[str, str]


class KeyRateLimiter:
    def __init__(self, spec: str) -> None:
        """``spec``: one or more limits, ``;``-separated, e.g. ``200/second;6000/minute``."""
        self.items = parse_many(spec)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._policy = ", ".join(f"{item.amount};w={item.get_expiry()}" for item in self.items)

    def check(self, key: str) -> RateDecision:
        """Count one request for ``key`` if every limit allows it; a refused request is
        not counted, so a client that waits as told gets through."""
        allowed = all(self._limiter.test(item, key) for item in self.items)
        if allowed:
            for item in self.items:
                self._limiter.hit(item, key)
        now = time.time()
        windows = [(self._limiter.get_window_stats(item, key), item) for item in self.items]
        window, item = min(windows, key=lambda pair: pair[0].remaining)
        remaining, limit = window.remaining, item.amount
        reset = max(window.reset_time - now, 0.0)
        reset_whole = max(1, math.ceil(reset))
        headers = {
            "RateLimit-Policy": self._policy,
            "RateLimit": f"limit={limit}, remaining={remaining}, reset={reset_whole}",
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(now + reset)),
        }
        if not allowed:
            headers["Retry-After"] = str(reset_whole)
        return RateDecision(allowed, limit, remaining, reset, headers)
