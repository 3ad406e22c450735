"""Each API request's latency, by route template, and its access-log line.

The route label is the template the request matched (``/v1/{project_id}/…``), never
the raw path, so the number of series stays bounded whatever callers send; a request no
route served (an unknown path, a refusal by the rate limit) is ``other``, and everything
the notebook proxy serves is one route.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demanager.engine.metrics import OTHER_ROUTE, Metrics
from demanager.proxy.gateway import PREFIX

access = logging.getLogger("demanager.access")

NOTEBOOK_PREFIX = PREFIX.decode()
NOTEBOOK_ROUTE = NOTEBOOK_PREFIX + "{instance_id}/…"
METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"})
"""Methods labelled as themselves; any other a caller makes up is ``other``."""
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probed every few seconds: their access lines are debug-level."""


class RouteTimer:
    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the server answers should the app raise before starting one
        # The runtime, and with it the metrics, exist once the lifespan has started.
        runtime = getattr(scope["app"].state, "runtime", None)
        metrics: Metrics | None = runtime.metrics if runtime is not None else None
        timed = False

        def finish() -> None:
            nonlocal timed
            if timed:
                return
            timed = True
            seconds = time.perf_counter() - began
            route = route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else OTHER_ROUTE
            if metrics is not None:
                metrics.http_requests.labels(method, route, str(status)).observe(seconds)
            if self.access_log:
                level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
                access.log(level, "%s %s %d", method, route, status, extra={
                    "method": method, "route": route, "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                })

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Until the answer starts: a streamed notebook answer may last minutes.
                await send(message)
                finish()
                return
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            finish()


def route_of(scope: Scope) -> str:
    """The template of the route that served the request: routing records it in the
    scope (which this middleware shares with the router) before the endpoint runs."""
    if scope["path"].startswith(NOTEBOOK_PREFIX):
        return NOTEBOOK_ROUTE
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else OTHER_ROUTE
