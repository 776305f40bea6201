"""API keys: when the server has keys, every request needs `Authorization: Bearer <key>`, except the few paths
that reveal nothing (OPEN_PATHS, OPEN_PREFIXES).

Pure ASGI middleware, so streaming and disconnect detection are untouched; CORS preflights are answered by the
CORS middleware outside this one. Keys are compared in constant time,
against every configured key, so neither a key's length nor which key matched shows in the timing.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from vlserve.api.errors import error_body
from vlserve.errors import AuthenticationError

# Liveness; xinference-client's probe "does this server want a key?" (asked before it sends one); the web UI's
# shipped files (the page asks the user for a key when the API answers 401); Xinference's login, which the client
# calls without a key and which answers only that this server has keys, not accounts.
OPEN_PATHS = frozenset({"/health", "/v1/cluster/auth", "/", "/ui", "/token"})
OPEN_PREFIXES = ("/ui/static/",)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def key_matches(given: str, keys: tuple[bytes, ...]) -> bool:
    candidate = given.encode()
    matched = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        matched |= hmac.compare_digest(candidate, key)
    return matched


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        problem = self._problem(Headers(scope=scope).get("authorization", ""))
        if problem is None:
            await self.app(scope, receive, send)
            return
        error = AuthenticationError(problem)
        response = JSONResponse(error_body(error), status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _problem(self, header: str) -> str | None:
        scheme, _, token = header.partition(" ")
        if not header:
            return "this server needs an API key: send Authorization: Bearer <key> (CLI: --api-key or VLSERVE_API_KEY)"
        if scheme.lower() != "bearer" or not token.strip():
            return "the Authorization header must be 'Bearer <key>'"
        if not key_matches(token.strip(), self.keys):
            return "the API key is not valid for this server"
        return None
