"""Pure ASGI middleware (so streaming and disconnect detection are untouched): per-request context (a request id
-- the caller's `X-Request-Id`, else a new one -- echoed in the response and put on every log line, an access log
line, the HTTP metrics by route template) and the request body size limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlserve.api.errors import error_body
from vlserve.api.logs import request_id_var
from vlserve.errors import PayloadTooLarge
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


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(error_body(self._error()), status_code=413)
            await response(scope, receive, send)
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes and not refused:  # answer now; the app sees its client leave
                refused = True
                await JSONResponse(error_body(self._error()), status_code=413)(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, send_unless_refused)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than this server's limit of {self.max_bytes} bytes; "
                               "send smaller images (or image URLs)")
