"""The typed errors of vlserve. Each class carries its HTTP status and OpenAI error type, so the API maps them
in one place (vlserve.api.errors) and the CLI prints their message as it is.

Messages say what to do, not only what went wrong."""

from __future__ import annotations


class VlserveError(Exception):
    """Base of every error vlserve raises on purpose."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(VlserveError):
    """The caller sent something that cannot be served as it is (bad field, bad value, bad combination)."""

    status_code = 400
    error_type = "invalid_request_error"


class SpecNotFound(InvalidRequest):
    """No registered model matches the requested (name, engine, format, size, quantization)."""


class RegistrationError(InvalidRequest):
    """A family file is invalid, or tries to replace a built-in family."""


class PayloadTooLarge(InvalidRequest):
    """A request body, image or video over the server's size limit."""

    status_code = 413


class AuthenticationError(VlserveError):
    status_code = 401
    error_type = "authentication_error"


class NotFound(VlserveError):
    """A model uid, registration or cache entry that does not exist."""

    status_code = 404
    error_type = "not_found_error"


class Conflict(VlserveError):
    status_code = 409
    error_type = "conflict_error"


class Overloaded(VlserveError):
    """Too many requests queued for a model; the client should retry later."""

    status_code = 503
    error_type = "overloaded_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotReady(VlserveError):
    status_code = 503
    error_type = "model_not_ready"


class DownloadError(VlserveError):
    """A model could not be fetched from its hub (network, missing repo, interrupted transfer)."""

    status_code = 502
    error_type = "download_error"


class EngineError(VlserveError):
    """The engine failed while serving one request; other requests are unaffected."""

    status_code = 500
    error_type = "engine_error"


class EngineDead(EngineError):
    """The engine can serve nothing any more (e.g. its worker thread died); the host marks its model `error`."""


class EngineUnavailable(InvalidRequest):
    """The chosen engine is not installed or cannot run this spec on this machine."""
