"""Every HTTP request counted and timed: by route template (never the raw path), method
and status class, in Prometheus and in the operation statistics.

The template is the matched route's (``/api/v1/events/{event_id}``), read after the app
has routed the request; a request no route matched counts as ``<unmatched>``, and a method
outside the standard ones as ``OTHER``, so no caller can grow the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forecourt.observability.instruments import (
    HTTP_REQUESTS,
    HTTP_SECONDS,
    UNMATCHED_ROUTE,
    status_class,
)
from forecourt.observability.operations import OPERATIONS, OperationStats

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, stats: OperationStats = OPERATIONS) -> None:
        self.app = app
        self.stats = stats
        # Label children by (route, method, class): resolved once, then a dict lookup.
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            if not isinstance(template, str):
                template = UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            key = (template, method, status_class(status))
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    HTTP_REQUESTS.labels(route=template, method=method, status=key[2]),
                    HTTP_SECONDS.labels(route=template, method=method),
                )
            children[0].inc()
            children[1].observe(elapsed)
            self.stats.record(f"{method} {template}", elapsed, "route")
