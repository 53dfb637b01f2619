"""Error codes of ``error`` frames, WebSocket close codes, and the one decoding error.

Exceptions::

    ProtocolError          a client frame that cannot be accepted (answered with an
                           ``error`` frame; the socket stays open)
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009  # past the hard frame cap; below it the client gets an error frame
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # server restarting: reconnect (elsewhere) and resume
    UNAUTHORIZED = 4001  # no/invalid hello in time, bad or expired token
    POLICY = 4008  # persistent rate abuse, too many sockets for this user
    SLOW_CONSUMER = 4009  # outbound queue overflowed; resume from the last ack
    SUPERSEDED = 4011  # a newer connection of the same device took over


class ErrorCode(StrEnum):
    INVALID_FRAME = "invalid_frame"  # not a map, malformed JSON/MessagePack, missing type
    UNKNOWN_TYPE = "unknown_type"
    FRAME_TOO_LARGE = "frame_too_large"
    VALIDATION_FAILED = "validation_failed"
    HELLO_REQUIRED = "hello_required"
    ALREADY_AUTHENTICATED = "already_authenticated"
    UNAUTHORIZED = "unauthorized"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A frame the server cannot accept; names the problem and, when known, the request."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: str | int | None = None,
        frame_type: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.frame_type = frame_type
        self.details = details
