"""Waiting for the recommender's ``/readyz`` before an experiment starts.

An attacker started beside the service (compose under an engine that ignores
``service_healthy``, such as podman-compose; a slow model load; a restart replaying its
ledger) must not fail on its first request: it polls ``/readyz`` with a doubling,
capped backoff whose waits add up to a bound, says once what it is waiting for, and
then gives up with the server, the time waited and the last answer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import httpx

from shared.errors import CopyAttackError

READY_TIMEOUT = 300.0  # s: a model load plus a ledger replay of a long run
FIRST_DELAY = 0.5
MAX_DELAY = 10.0


def backoff_delays(total: float, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> list[float]:
    """The waits between attempts: doubling from ``first``, at most ``cap``, adding up to
    ``total`` exactly (the last one shortened); none when ``total`` is 0."""
    if total < 0 or first <= 0 or cap <= 0:
        raise ValueError(
            f"backoff needs total >= 0 and positive delays, got {total}, {first}, {cap}"
        )
    delays: list[float] = []
    delay = first
    while (spent := sum(delays)) < total:
        delays.append(min(delay, cap, total - spent))
        delay *= 2
    return delays


def _warn(message: str) -> None:
    print(f"copyattack: {message}", file=sys.stderr, flush=True)


async def wait_until_ready(
    server: str,
    total: float = READY_TIMEOUT,
    *,
    probe_timeout: float = 5.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    say: Callable[[str], None] = _warn,
) -> int:
    """Poll ``{server}/readyz`` until it answers 200; returns the number of attempts.

    Raises :class:`CopyAttackError` once the waits of :func:`backoff_delays` are spent
    (each probe also has ``probe_timeout``, for a port that accepts and never answers)."""
    url = server.rstrip("/") + "/readyz"
    delays = backoff_delays(total)
    last = "no answer"
    async with httpx.AsyncClient(timeout=probe_timeout) as client:
        for attempt in range(1, len(delays) + 2):
            try:
                response = await client.get(url)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code == 200:
                    if attempt > 1:
                        say(f"{url} is ready (attempt {attempt})")
                    return attempt
                last = f"HTTP {response.status_code} {response.text[:200]}"
            if attempt > len(delays):
                break
            if attempt == 1:
                say(f"waiting for the recommender: {url} is not ready ({last}); "
                    f"retrying for up to {total:.0f} s")  # fmt: skip
            await sleep(delays[attempt - 1])
    raise CopyAttackError(
        f"the recommender at {server} was not ready after {total:.0f} s (attempts: {attempt}; "
        f"last: {last}): is recsys-server running and reachable at that address? "
        "(--wait-ready sets how long to wait)"
    )
