"""ASGI middleware: a request id on every request (X-Request-ID in and out, on every log line of
the request), the latency histogram per route template and status, and one access log line."""

from __future__ import annotations

import logging
import time
from typing import Any

from services.observability.logs import new_request_id, request_id_var
from services.observability.metrics import HTTP_REQUEST_SECONDS

access_log = logging.getLogger("saekin.access")
# Paths no route matched are counted under one label, so that scanners cannot grow the metric without bound.
UNMATCHED = "<unmatched>"


class ObserveRequests:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope.get("headers") or ():
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = new_request_id(incoming)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            HTTP_REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(seconds)
            access_log.info(
                "%s %s %s %.1f ms",
                scope["method"],
                scope.get("path", ""),
                status,
                seconds * 1000,
                extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 1)},
            )
            request_id_var.reset(token)


def _route_template(scope: Any) -> str:
    """The matched route's path template (/v1/collections/{collection}/search), not the raw path."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED
