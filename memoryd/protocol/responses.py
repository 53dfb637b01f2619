"""REST response bodies that wrap a resource, and the error body every route answers with.

The routes return these structs and the OpenAPI document is generated from the same
classes, so a response cannot drift from its schema. (The socket answers with frames,
`memoryd.protocol.frames`.)
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.protocol.models import Category, FileInfo, Memory, Message, ReadMarker, User


class UserResponse(msgspec.Struct, kw_only=True):
    user: User


class CategoryResponse(msgspec.Struct, kw_only=True):
    category: Category


class CategoryList(msgspec.Struct, kw_only=True):
    categories: list[Category]


class MemoryResponse(msgspec.Struct, kw_only=True):
    memory: Memory


class MessageResponse(msgspec.Struct, kw_only=True):
    message: Message


class ReadResponse(msgspec.Struct, kw_only=True):
    read: ReadMarker


class FileResponse(msgspec.Struct, kw_only=True):
    file: FileInfo


class SentMessage(msgspec.Struct, rename="camel", kw_only=True):
    """`aiResponse`: Memo's reply, present when the send had `ai: true` and the reply was
    stored within MEMORYD_AI_REPLY_WAIT; its `status` is `sent`, `failed` or `cancelled`."""

    message: Message
    ai_response: Message | UnsetType = UNSET


class FieldError(msgspec.Struct, kw_only=True):
    """One bad field; `field` is null when the problem is the body as a whole."""

    field: str | None
    message: str


class ErrorBody(msgspec.Struct, kw_only=True):
    """`details`: FieldErrors (validation, conflicts), `{limit, retryAfter}` or null."""

    code: str
    message: str
    details: list[FieldError] | dict[str, Any] | None


class Error(msgspec.Struct, kw_only=True):
    """Every error response: a stable machine-readable `code` and a human message."""

    error: ErrorBody
