"""Gateway metrics (names are a contract) and the ASGI middleware that records them per route."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, services: list[str]) -> None:
        self.requests = Counter("gateway_requests", "HTTP requests by route template and status code",
                                ["route", "code"], registry=registry)
        self.submitted = Counter("gateway_jobs_submitted", "Jobs accepted and queued",
                                 ["service"], registry=registry)
        for service in services:
            self.submitted.labels(service)
        self.duration = Histogram("gateway_request_duration_seconds",
                                  "Request handling time by route template",
                                  ["route"], buckets=REQUEST_BUCKETS, registry=registry)


class MetricsMiddleware:
    """Labels requests by route template (/v1/jobs/{job_id}), never the raw path: bounded cardinality."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def _route(self, scope: Scope) -> str:
        router = scope["app"].router
        for route in router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "unmatched")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = self._route(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - start)
