"""The one error hierarchy whose text may reach a client.

A `ClientError` carries a stable machine-readable ``code``, a human message, the HTTP
status it maps to and optional ``details``. REST renders it as
``{"error": {"code", "message", "details"}}``; the socket renders it as an ``error``
frame. Any other exception is logged and answered with a generic ``internal`` error.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details


class ValidationFailed(ClientError):
    """400: the input does not fit; ``details`` lists ``{field, message}`` per problem."""

    status = 400
    code = "validation_failed"


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unavailable(ClientError):
    status = 503
    code = "unavailable"


class ConfigError(Exception):
    """Bad configuration: printed as one line at start-up, never a traceback."""
