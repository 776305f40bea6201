"""The one place errors become HTTP responses: every error is an OpenAI error body
`{"error": {"message", "type", "param", "code"}}`, with the status of its `VlserveError` class.

The body also carries `detail` (the same message): xinference-client reads `detail` from failed responses, so its
users see the reason instead of a bare status line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vlserve.errors import InvalidRequest, NotFound, Overloaded, VlserveError

log = logging.getLogger(__name__)
_TYPE_LABELS = {"str", "int", "float", "bool", "list", "dict", "none"}


def error_body(error: VlserveError) -> dict[str, Any]:
    return {
        "error": {"message": error.message, "type": error.error_type, "param": error.param, "code": error.status_code},
        "detail": error.message,
    }


def _field(error: dict) -> str:
    """The field path as the caller wrote it: no 'body' prefix, no pydantic union-member labels (str, list[...])."""
    if error.get("type") == "json_invalid":
        return ""
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
    parts = [p for p in parts if "[" not in p and not p[:1].isupper() and p not in _TYPE_LABELS]
    # a discriminated union labels its member by the tag, which our parts repeat as the field name: image_url.image_url
    return ".".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1])


_BODY_PROBLEMS = {  # errors about the body as a whole, which pydantic words for a field
    "json_invalid": "the request body is not valid JSON",
    "missing": "the request body is empty; send a JSON object (Content-Type: application/json)",
    "model_attributes_type": "the request body must be a JSON object (Content-Type: application/json)",
    "dict_type": "the request body must be a JSON object (Content-Type: application/json)",
}


def _problem(error: dict) -> str:
    if error.get("type") == "json_invalid" or (tuple(error.get("loc", ())) == ("body",)
                                               and error.get("type") in _BODY_PROBLEMS):
        return _BODY_PROBLEMS[error["type"]]
    return f"{_field(error)}: {error.get('msg')}" if _field(error) else str(error.get("msg"))


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    """Name the field; of a union's per-member errors keep the most specific (a field no other error extends)."""
    errors = exc.errors()
    fields = [_field(e) for e in errors]
    specific = [e for e, f in zip(errors, fields, strict=True) if not any(o.startswith(f + ".") for o in fields if f)]
    specific = specific or errors
    message = "; ".join(dict.fromkeys(_problem(e) for e in specific[:3])) or "invalid request"
    return InvalidRequest(message, param=(_field(specific[0]) or None) if specific else None)


def _http_error(request: Request, exc: HTTPException) -> VlserveError:
    if exc.status_code == 404:
        return NotFound(f"no route {request.method} {request.url.path}; see the API list in the README")
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's words
        return InvalidRequest("the request body could not be read as JSON (is it UTF-8 JSON, as Content-Type says?)")
    error = VlserveError(str(exc.detail))
    error.status_code = exc.status_code  # keep the router's status (405, ...) on this one instance
    error.error_type = "invalid_request_error" if exc.status_code < 500 else "internal_error"
    return error


def to_error(request: Request, exc: Exception) -> VlserveError:
    if isinstance(exc, VlserveError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        return _http_error(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return VlserveError("internal server error; the server log has the details under this request's X-Request-Id")


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    error = to_error(request, exc)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    return JSONResponse(error_body(error), status_code=error.status_code, headers=headers)


def install_error_handler(app: FastAPI) -> None:
    for kind in (VlserveError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handle_error)
