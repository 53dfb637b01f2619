"""Request and result bodies shared by the REST API and the socket protocol.

Each request struct carries its validation rules (msgspec ``Meta`` constraints, the seed
plan's Joi rules); a rule may carry a human message in ``extra={"message": ...}``. REST
bodies are exactly these structs; socket request frames extend them with ``id`` (and the
target's id) in `memoryd.protocol.frames`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.protocol.models import Memory, Message, Pagination

Page = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
SortOrder = Annotated[
    str, msgspec.Meta(pattern="^(asc|desc)$", extra={"message": "must be asc or desc"})
]
# A query bound, documented as RFC 3339; one without an offset is accepted too (the
# database driver reads it in the server's local time zone).
Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})]
HexColor = Annotated[
    str,
    msgspec.Meta(pattern="^#[0-9A-Fa-f]{6}$", extra={"message": "must be a color like #1A2B3C"}),
]


CategoryName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Icon = Annotated[str, msgspec.Meta(max_length=50)]
SortOrderValue = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class CreateCategoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    name: CategoryName
    description: Description | None = None
    icon: Icon | None = None
    color: HexColor | None = None
    sort_order: SortOrderValue = 0


class UpdateCategoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    name: CategoryName | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    icon: Icon | UnsetType | None = UNSET
    color: HexColor | UnsetType | None = UNSET
    sort_order: SortOrderValue | UnsetType = UNSET


Title = Annotated[str, msgspec.Meta(max_length=255)]
Tags = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=50)]], msgspec.Meta(max_length=10)
]
PrivacyLevel = Annotated[
    str,
    msgspec.Meta(
        pattern="^(private|shared|public)$", extra={"message": "must be private, shared or public"}
    ),
]
SortBy = Annotated[
    str,
    msgspec.Meta(
        pattern="^(created_at|updated_at|title)$",
        extra={"message": "must be created_at, updated_at or title"},
    ),
]


class ListMemoriesRequest(msgspec.Struct, rename="camel", kw_only=True):
    category_id: UUID | None = None
    page: Page = 1
    limit: Limit = 20
    search: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    tags: Tags = []
    is_favorite: bool | None = None
    is_archived: bool | None = None
    sort_by: SortBy = "updated_at"
    sort_order: SortOrder = "desc"


class CreateMemoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    title: Title | None = None
    description: Description | None = None
    category_id: UUID | None = None
    content: Any = None
    tags: Tags = []
    metadata: Any = None
    is_favorite: bool = False
    is_archived: bool = False
    privacy_level: PrivacyLevel = "private"


class UpdateMemoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    title: Title | UnsetType | None = UNSET
    description: Description | UnsetType | None = UNSET
    category_id: UUID | UnsetType | None = UNSET
    content: Any | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET
    is_favorite: bool | UnsetType = UNSET
    is_archived: bool | UnsetType = UNSET
    privacy_level: PrivacyLevel | UnsetType = UNSET


class MemoryPage(msgspec.Struct, rename="camel", kw_only=True):
    memories: list[Memory]
    pagination: Pagination


# A hard ceiling; the configured limit (MEMORYD_MAX_CONTENT_CHARS, default 10000 as in the
# seed) is checked by the handler and announced in welcome.limits.
MAX_CONTENT_CEILING = 1_000_000
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CEILING)]
MessageType = Annotated[
    str,
    msgspec.Meta(
        pattern="^(text|voice|image|document)$",
        extra={"message": "must be one of text, voice, image, document"},
    ),
]
Attachments = Annotated[list[UUID], msgspec.Meta(max_length=5)]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class SendMessageRequest(msgspec.Struct, rename="camel", kw_only=True):
    content: Content
    message_type: MessageType = "text"
    attachments: Attachments = []
    metadata: Any = None
    parent_id: UUID | None = None
    client_msg_id: ClientMsgId | None = None
    ai: bool = False  # ask Memo to reply (needs access:ai); the reply arrives as an event


class EditMessageRequest(msgspec.Struct, rename="camel", kw_only=True):
    content: Content | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET


class ListMessagesRequest(msgspec.Struct, rename="camel", kw_only=True):
    page: Page = 1
    limit: Limit = 50
    before: Timestamp | None = None
    after: Timestamp | None = None
    sort_order: SortOrder = "desc"


class MessagePage(msgspec.Struct, rename="camel", kw_only=True):
    messages: list[Message]
    pagination: Pagination


class SendResult(msgspec.Struct, rename="camel", kw_only=True):
    message: Message
    created: bool  # False when the clientMsgId had been seen: the earlier message came back


class HistoryPage(msgspec.Struct, rename="camel", kw_only=True):
    """Reply of ``message.history``: oldest first; ``hasMore`` when older ones remain."""

    messages: list[Message]
    has_more: bool


class MarkReadRequest(msgspec.Struct, rename="camel", kw_only=True):
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**62)]
