"""Per-key rate limiting with moving windows, in memory, and the headers that tell a client
where it stands: the IETF draft ``RateLimit`` / ``RateLimit-Policy`` fields
(draft-ietf-httpapi-ratelimit-headers-07) and the legacy ``X-RateLimit-*`` ones.

The limits are parsed by the ``limits`` library (``200/second;6000/minute``), but counted
here: its in-memory moving window cost about 100 us per request (string keys built per
call, two bisections per limit, a timer thread restarted every 10 ms to expire entries),
as much as the whole no-op route; a deque of hit times per key and limit costs a few
microseconds with the same answers. Called from the event loop only, so no lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from limits import RateLimitItem, parse_many


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
        self.items: list[RateLimitItem] = parse_many(spec)
        self._windows = [(item.amount, float(item.get_expiry())) for item in self.items]
        self._policy = ", ".join(f"{item.amount};w={item.get_expiry()}" for item in self.items)
        # key -> per limit, the times of the counted requests still in its window, oldest
        # first; a window never holds more than its amount (a full one refuses), so memory
        # is bounded per key. A key's entry stays after its world is gone: one per world
        # created in the process's life.
        self._hits: dict[str, list[deque[float]]] = {}

    def check(self, key: str) -> RateDecision:
        """Count one request for ``key`` if every limit allows it; a refused request is
        not counted, so a client that waits as told gets through."""
        now = time.monotonic()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = [deque() for _ in self._windows]
        for times, (_, expiry) in zip(hits, self._windows, strict=True):
            while times and times[0] <= now - expiry:
                times.popleft()
        allowed = all(
            len(times) < amount for times, (amount, _) in zip(hits, self._windows, strict=True)
        )
        if allowed:
            for times in hits:
                times.append(now)
        # the tightest limit: fewest requests left; its window frees one when its oldest
        # counted request leaves it
        position = min(range(len(hits)), key=lambda p: self._windows[p][0] - len(hits[p]))
        limit, expiry = self._windows[position]
        remaining = limit - len(hits[position])
        oldest = hits[position]
        reset = oldest[0] + expiry - now if oldest else 0.0
        reset_whole = max(1, math.ceil(reset))
        headers = {
            "RateLimit-Policy": self._policy,
            "RateLimit": f"limit={limit}, remaining={remaining}, reset={reset_whole}",
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + reset)),
        }
        if not allowed:
            headers["Retry-After"] = str(reset_whole)
        return RateDecision(allowed, limit, remaining, reset, headers)
