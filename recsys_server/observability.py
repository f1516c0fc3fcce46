"""Prometheus metrics of one app: requests and latency per route, queries and injections
per world, refresh seconds. A registry per app, so several apps (tests) never clash."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recsys_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsys_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queries = Counter(
            "recsys_world_queries", "Answered /topk queries", ["world"], registry=self.registry
        )
        self.injections = Counter(
            "recsys_world_injections", "Acknowledged injections", ["world"], registry=self.registry
        )
        self.refresh_seconds = Histogram(
            "recsys_refresh_seconds",
            "Incremental refresh of one injection",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.worlds = Gauge("recsys_worlds", "Live worlds", registry=self.registry)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body buffering): times every HTTP request and
    labels it by route template, so /topk/{user_id} is one series."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(scope["method"], path).observe(
                time.perf_counter() - started
            )
