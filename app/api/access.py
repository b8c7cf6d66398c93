"""The access log and the HTTP metrics: one line per request with the method, the route TEMPLATE
(``/series/{series_uid}``, never the path, which carries UIDs, nor the query, which can carry a PatientID),
the status and the duration. uvicorn's own access log stays off: it writes the raw path and query."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services import metrics

log = logging.getLogger("gatekeeper.access")
UNMATCHED = "(unmatched)"  # a path no route serves (404): its text is never logged


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class AccessLog:
    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before it starts a response

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            seconds = time.perf_counter() - start
            method, template = str(scope.get("method", "")), route_template(scope)
            metrics.observe_request(method, template, status, seconds)
            if self.enabled:
                log.info("%s %s %d %.1f ms", method, template, status, seconds * 1000,
                         extra={"method": method, "route": template, "status": status,
                                "duration_ms": round(seconds * 1000, 2)})  # fmt: skip
