"""Per-request context as pure ASGI middleware (so streaming and disconnect detection are untouched): a request
id (the caller's `X-Request-Id`, else a new one) echoed in the response and put on every log line, an access log
line, and the HTTP metrics by route template."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlserve.api.logs import request_id_var
from vlserve.serving.metrics import Metrics

access_log = logging.getLogger("vlserve.access")
_SAFE_ID = re.compile(r"^[\w.:\-]{1,128}$")


def _request_id(scope: Scope) -> str:
    given = Headers(scope=scope).get("x-request-id", "")
    return given if _SAFE_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.http_requests.labels(route, scope["method"], str(status)).inc()
        self.metrics.http_latency.labels(route).observe(seconds)
        access_log.info(
            "%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, seconds * 1000,
            extra={"method": scope["method"], "path": scope["path"], "status": status,
                   "duration_ms": round(seconds * 1000, 1)},
        )
