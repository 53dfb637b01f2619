"""Every frame of wire protocol v1 as a msgspec Struct, tagged on ``type``.

Client -> server: ``hello``, ``ack`` and requests (``{type, id, ...}``).
Server -> client: ``welcome``, ``reply``, ``error``, ``event``, ``signal``.
Field names are camelCase on the wire. docs/protocol.md describes each one.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from memoryd.protocol.ai import AskRequest, CancelRequest
from memoryd.protocol.requests import (
    ClientMsgId,
    CreateCategoryRequest,
    CreateMemoryRequest,
    EditMessageRequest,
    Limit,
    ListMemoriesRequest,
    SendMessageRequest,
    UpdateCategoryRequest,
    UpdateMemoryRequest,
)
from memoryd.protocol.search import SearchRequest

RequestId = (
    Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    | Annotated[int, msgspec.Meta(ge=0, le=2**53)]
)
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**62)]

_CLIENT = {"tag_field": "type", "rename": "camel", "kw_only": True, "forbid_unknown_fields": True}
_SERVER = {"tag_field": "type", "rename": "camel", "kw_only": True, "omit_defaults": True}


# -- client -> server ---------------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", **_CLIENT):
    """First frame of a connection, within the hello timeout."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    device_id: UUID | None = None
    last_seq: Seq | None = None
    client: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class Ack(msgspec.Struct, tag="ack", **_CLIENT):
    """Cumulative: every event up to ``seq`` was processed. No reply."""

    seq: Seq


class Ping(msgspec.Struct, tag="ping", **_CLIENT):
    id: RequestId


class AuthRefresh(msgspec.Struct, tag="auth.refresh", **_CLIENT):
    """A fresh access token for this open socket, before the current one expires."""

    id: RequestId
    access_token: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]


class Typing(msgspec.Struct, tag="typing", **_CLIENT):
    """Ephemeral: relayed to the user's other devices as a ``typing`` signal."""

    memory_id: UUID
    id: RequestId | None = None


class Presence(msgspec.Struct, tag="presence", **_CLIENT):
    """Which of the user's devices are online (on any node)."""

    id: RequestId


class Read(msgspec.Struct, tag="read", **_CLIENT):
    """Durable read marker: messages of the memory up to ``seq`` are read."""

    id: RequestId
    memory_id: UUID
    seq: Seq


class MemoryList(ListMemoriesRequest, tag="memory.list", **_CLIENT):
    id: RequestId


class MemoryGet(msgspec.Struct, tag="memory.get", **_CLIENT):
    id: RequestId
    memory_id: UUID


class MemoryCreate(CreateMemoryRequest, tag="memory.create", **_CLIENT):
    id: RequestId


class MemoryUpdate(UpdateMemoryRequest, tag="memory.update", **_CLIENT):
    id: RequestId
    memory_id: UUID


class MemoryDelete(msgspec.Struct, tag="memory.delete", **_CLIENT):
    id: RequestId
    memory_id: UUID


class CategoryList(msgspec.Struct, tag="category.list", **_CLIENT):
    id: RequestId


class CategoryCreate(CreateCategoryRequest, tag="category.create", **_CLIENT):
    id: RequestId


class CategoryUpdate(UpdateCategoryRequest, tag="category.update", **_CLIENT):
    id: RequestId
    category_id: UUID


class CategoryDelete(msgspec.Struct, tag="category.delete", **_CLIENT):
    id: RequestId
    category_id: UUID


class MessageSend(SendMessageRequest, tag="message.send", **_CLIENT):
    """``clientMsgId`` is required on the socket: a resend after a reconnect is idempotent."""

    id: RequestId
    memory_id: UUID
    client_msg_id: ClientMsgId


class MessageEdit(EditMessageRequest, tag="message.edit", **_CLIENT):
    id: RequestId
    message_id: UUID


class MessageDelete(msgspec.Struct, tag="message.delete", **_CLIENT):
    id: RequestId
    message_id: UUID


class MessageHistory(msgspec.Struct, tag="message.history", **_CLIENT):
    """The ``limit`` messages before per-memory seq ``before`` (default: the newest)."""

    id: RequestId
    memory_id: UUID
    before: Seq | None = None
    limit: Limit = 50


class AiAsk(AskRequest, tag="ai.ask", **_CLIENT):
    """Ask Memo about the thread; the reply streams as ``ai.delta`` signals, then arrives
    as a ``message.created`` event."""

    id: RequestId
    memory_id: UUID


class AiCancel(CancelRequest, tag="ai.cancel", **_CLIENT):
    """Stop Memo's reply to ``replyTo`` (or every reply in ``memoryId``)."""

    id: RequestId


class Search(SearchRequest, tag="search", **_CLIENT):
    """The same search as ``GET /api/search``; the reply's data is its answer."""

    id: RequestId


Request = (
    Ping
    | AuthRefresh
    | Typing
    | Presence
    | Read
    | MemoryList
    | MemoryGet
    | MemoryCreate
    | MemoryUpdate
    | MemoryDelete
    | CategoryList
    | CategoryCreate
    | CategoryUpdate
    | CategoryDelete
    | MessageSend
    | MessageEdit
    | MessageDelete
    | MessageHistory
    | AiAsk
    | AiCancel
    | Search
)
ClientFrame = Hello | Ack | Request

REQUEST_TYPES: tuple[type[msgspec.Struct], ...] = Request.__args__


# -- server -> client ---------------------------------------------------------------------


class Limits(msgspec.Struct, rename="camel", kw_only=True):
    """The bounds this server enforces, announced in ``welcome``."""

    max_frame_bytes: int
    max_content_chars: int
    max_queue: int
    requests_per_second: float
    request_burst: int
    max_sockets_per_user: int


class Welcome(msgspec.Struct, tag="welcome", **_SERVER):
    user_id: UUID
    device_id: UUID
    session_id: UUID
    head_seq: int
    heartbeat: float
    limits: Limits
    resync: bool = False


class Reply(msgspec.Struct, tag="reply", **_SERVER):
    id: RequestId
    data: Any


class Error(msgspec.Struct, tag="error", **_SERVER):
    code: str
    message: str
    id: RequestId | None = None
    retry_after: float | None = None
    details: Any = None


class EventFrame(msgspec.Struct, tag="event", **_SERVER):
    """A durable change; ``seq`` is per user, strictly increasing and gap-free."""

    seq: int
    event: str
    data: Any


class Signal(msgspec.Struct, tag="signal", **_SERVER):
    """Ephemeral (typing, presence, AI token deltas): never stored, never replayed."""

    signal: str
    data: Any


ServerFrame = Welcome | Reply | Error | EventFrame | Signal
