"""Locust users that spend ONE world's budgets: many ``GET /topk/{user}``, a few
``POST /inject_user`` and a few idempotent replays of acknowledged injections.

Why: the budgets and rate limits are promised to be exact under concurrency. This file
only generates the load and classifies each answer; ``loadtests/run.py`` starts the
server, creates the world, runs locust on this file and compares what locust saw with
the server's own usage counters.

Each answer lands under one request name, so the CSV separates the outcomes:

- ``GET /topk/[user]``, ``POST /inject_user``: answered (2xx), or an unexpected failure;
- ``... [rate-limited]`` / ``... [quota-exceeded]``: the two kinds of 429, told apart by
  the problem document's ``type`` (RFC 9457), counted as expected outcomes (success);
- ``POST /inject_user [replay]``: the same ``Idempotency-Key`` and profile sent again; a
  201 that must name the first user and must not be counted by the server.

Anything else (another status, a 429 of another type, a malformed body, a connection
error) is a failure. Locust never retries (``max_retries = 0``).

Configuration, from the environment (set by the runner):

- ``LOADTEST_API_KEY``: the world's key, sent as ``X-API-Key`` (required);
- ``LOADTEST_USERS``: comma-separated user ids the key may query (its pretend users);
- ``LOADTEST_ITEMS`` (comma-separated item ids) or ``LOADTEST_N_ITEMS`` (ids 0..n-1);
- ``LOADTEST_WEIGHTS``: task weights, default ``topk=40,inject=2,replay=1``;
- ``LOADTEST_PROFILE_SIZE``: ``min-max`` items per injected profile, default ``2-5``;
- ``LOADTEST_COUNTERS``: where to write extra counters as JSON when locust quits.

With ``--csv PREFIX``, the final stats are also written to ``PREFIX_final_stats.csv``
when locust quits (``PREFIX_stats.csv`` misses the last second; see ``_write_final``).
"""

from __future__ import annotations

import csv
import json
import os
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

TOPK = "GET /topk/[user]"
INJECT = "POST /inject_user"
REPLAY = "POST /inject_user [replay]"
EXPECTED_429 = ("rate-limited", "quota-exceeded")
KS = (5, 10, 20)
# the share of /topk calls aimed at users this locust user injected (the rest: pretend users)
INJECTED_SHARE = 0.2


def _ints(name: str) -> list[int]:
    raw = os.environ.get(name, "")
    return [int(part) for part in raw.split(",") if part.strip()]


def _weights() -> dict[str, int]:
    weights = {"topk": 40, "inject": 2, "replay": 1}
    for part in os.environ.get("LOADTEST_WEIGHTS", "").split(","):
        if part.strip():
            name, value = part.split("=")
            if name.strip() not in weights:
                raise ValueError(f"LOADTEST_WEIGHTS: unknown task {name!r}")
            weights[name.strip()] = int(value)
    return weights


def _profile_size() -> tuple[int, int]:
    low, _, high = os.environ.get("LOADTEST_PROFILE_SIZE", "2-5").partition("-")
    return int(low), int(high or low)


API_KEY = os.environ.get("LOADTEST_API_KEY", "")
USERS = _ints("LOADTEST_USERS")
ITEMS = _ints("LOADTEST_ITEMS") or list(range(int(os.environ.get("LOADTEST_N_ITEMS", "0"))))
WEIGHTS = _weights()
PROFILE_SIZE = _profile_size()

# what the CSV cannot hold: header checks, injected items, per-status counts
COUNTERS: Counter[str] = Counter()


def _header(response: ResponseContextManager, name: str) -> str | None:
    headers = response.headers or {}
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _settle(response: ResponseContextManager, name: str, expected: int) -> Any | None:
    """The parsed body of an expected answer, else None after classifying the response:
    an expected 429 is renamed ``name [type]`` and marked a success, the rest failures."""
    status = response.status_code
    COUNTERS[f"status {status}"] += 1
    if status == 429:
        try:
            kind = response.json().get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind not in EXPECTED_429:
            response.failure(f"429 with problem type {kind!r}")
            return None
        response.request_meta["name"] = f"{name} [{kind}]"
        response.success()
        _check_429_headers(response, kind)
        return None
    if status != expected:
        detail = ""
        try:
            detail = response.json().get("detail", "")
        except (ValueError, AttributeError):
            detail = (response.text or "")[:200]
        response.failure(f"HTTP {status}: {detail}")
        return None
    try:
        return response.json()
    except ValueError as error:
        response.failure(f"HTTP {status} with a body that is not JSON: {error}")
        return None


def _check_429_headers(response: ResponseContextManager, kind: str) -> None:
    """What each 429 promises (docs/service.md, "Limits, errors and malformed HTTP": rate
    limits; docs/design.md, "Worlds and budgets": a spent budget), counted (not failed):
    the runner reports it."""
    content_type = _header(response, "content-type") or ""
    if not content_type.startswith("application/problem+json"):
        COUNTERS[f"{kind}: content-type not problem+json"] += 1
    if _header(response, "ratelimit") is None:
        COUNTERS[f"{kind}: no RateLimit header"] += 1
    if kind == "rate-limited" and _header(response, "retry-after") is None:
        COUNTERS[f"{kind}: no Retry-After"] += 1
    if kind == "quota-exceeded" and _header(response, "x-should-retry") != "false":
        COUNTERS[f"{kind}: no x-should-retry: false"] += 1


class BudgetedAttacker(FastHttpUser):
    """One attacker process among many, all with the same key: as fast as it can."""

    wait_time = constant(0)
    max_retries = 0
    network_timeout = 30.0
    connection_timeout = 30.0
    default_headers = {"X-API-Key": API_KEY}  # noqa: RUF012 (locust reads it once)

    def on_start(self) -> None:
        if not API_KEY or not USERS or not ITEMS:
            raise RuntimeError("set LOADTEST_API_KEY, LOADTEST_USERS and LOADTEST_N_ITEMS")
        self.rng = random.Random()
        self.injected: list[int] = []  # users this locust user injected (queryable)
        self.acknowledged: list[tuple[str, list[int], int]] = []  # key, profile, user

    @task(WEIGHTS["topk"])
    def topk(self) -> None:
        if self.injected and self.rng.random() < INJECTED_SHARE:
            user = self.rng.choice(self.injected)
        else:
            user = self.rng.choice(USERS)
        k = self.rng.choice(KS)
        with self.client.get(f"/topk/{user}?k={k}", name=TOPK, catch_response=True) as response:
            body = _settle(response, TOPK, 200)
            if body is None:
                return
            items = body.get("items")
            if body.get("user_id") != user or not isinstance(items, list) or len(items) > k:
                response.failure(f"unexpected top-{k} answer for user {user}: {body}")

    @task(WEIGHTS["inject"])
    def inject(self) -> None:
        size = self.rng.randint(*PROFILE_SIZE)
        items = self.rng.sample(ITEMS, min(size, len(ITEMS)))
        key = uuid.uuid4().hex  # a fresh key: a new injection, counted once by the server
        with self.client.post(
            "/inject_user",
            json={"items": items},
            headers={"Idempotency-Key": key},
            name=INJECT,
            catch_response=True,
        ) as response:
            body = _settle(response, INJECT, 201)
            if body is None:
                return
            if body.get("n_items") != len(items) or not isinstance(body.get("user_id"), int):
                response.failure(f"unexpected injection answer: {body}")
                return
            COUNTERS["injected items"] += len(items)
            self.injected.append(body["user_id"])
            self.acknowledged.append((key, items, body["user_id"]))

    @task(WEIGHTS["replay"])
    def replay(self) -> None:
        """A client retry after a lost answer: must return the first user, count nothing."""
        if not self.acknowledged:
            return
        key, items, user = self.rng.choice(self.acknowledged)
        with self.client.post(
            "/inject_user",
            json={"items": items},
            headers={"Idempotency-Key": key},
            name=REPLAY,
            catch_response=True,
        ) as response:
            body = _settle(response, REPLAY, 201)
            if body is not None and body.get("user_id") != user:
                response.failure(f"replay of {key} answered user {body.get('user_id')}, not {user}")


@events.quitting.add_listener
def _write_final(environment: Environment, **_: Any) -> None:
    """Locust rewrites ``*_stats.csv`` once a second and not after the users stopped, so
    the file misses the last second (locust issues #1806, #2299). Here, once every user
    has stopped, the final stats go to ``PREFIX_final_stats.csv`` and
    ``PREFIX_final_failures.csv`` (locust's own columns), and the counters to
    ``LOADTEST_COUNTERS``."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
        with open(f"{prefix}_final_stats.csv", "w", newline="") as handle:
            writer.requests_csv(csv.writer(handle))
        with open(f"{prefix}_final_failures.csv", "w", newline="") as handle:
            writer.failures_csv(csv.writer(handle))
    path = os.environ.get("LOADTEST_COUNTERS")
    if path:
        Path(path).write_text(json.dumps(dict(sorted(COUNTERS.items())), indent=2) + "\n")
