"""Resources as they appear on the wire (REST bodies, socket replies and event data).

Field names are snake_case in Python and camelCase on the wire (``rename="camel"``),
matching the seed plan's API. Timestamps are RFC 3339 strings, ids are UUID strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp with its UTC offset, as every one the server writes: the JSON Schema says
``format: date-time`` (RFC 3339 requires the offset) and decoding refuses a naive one."""


class Resource(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every resource: camelCase on the wire, keyword-only construction."""


class User(Resource, kw_only=True):
    id: UUID
    email: str
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    avatar_url: str | None = None
    phone_number: str | None = None
    timezone: str = "UTC"
    language: str = "en"
    theme_preference: str = "system"
    role: str = "user"
    is_verified: bool = False
    is_active: bool = True
    last_login_at: AwareDatetime | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Category(Resource, kw_only=True):
    id: UUID
    user_id: UUID
    name: str
    description: str | None = None
    icon: str | None = None
    color: str | None = None
    is_default: bool = False
    sort_order: int = 0
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Memory(Resource, kw_only=True):
    id: UUID
    user_id: UUID
    category_id: UUID | None = None
    title: str | None = None
    description: str | None = None
    content: Any = None
    tags: list[str] = []
    metadata: Any = None
    is_favorite: bool = False
    is_archived: bool = False
    privacy_level: str = "private"
    last_message_seq: int = 0
    last_read_seq: int = 0  # messages with seq <= this are read on every device
    message_count: int = 0
    created_at: AwareDatetime
    updated_at: AwareDatetime


class FileInfo(Resource, kw_only=True):
    """A stored file (an upload, a voice note, WhatsApp media). ``file_type`` is the
    content type sniffed from its bytes; the bytes are at ``url`` (and a thumbnail of an
    image at ``thumbnail_url``); an image's ``metadata`` has ``width`` and ``height``."""

    id: UUID
    memory_id: UUID | None = None
    message_id: UUID | None = None
    filename: str
    original_filename: str
    file_type: str
    file_size: int
    kind: str = "document"  # image, audio, video or document
    sha256: str | None = None
    url: str
    thumbnail_url: str | None = None
    metadata: Any = None
    created_at: AwareDatetime


class Message(Resource, kw_only=True):
    id: UUID
    memory_id: UUID
    user_id: UUID
    seq: int
    client_msg_id: str | None = None
    content: str
    message_type: str = "text"
    metadata: Any = None
    attachments: list[str] = []
    files: list[FileInfo] = []  # the attachments' metadata, in `attachments` order
    is_ai_generated: bool = False
    parent_id: UUID | None = None
    status: str = "sent"
    created_at: AwareDatetime
    updated_at: AwareDatetime


class TranscriptSegment(Resource, kw_only=True):
    text: str
    start: float  # seconds from the start of the audio
    end: float
    confidence: float  # 0..1


class Transcription(Resource, kw_only=True):
    """The seed's ``TranscriptionResponse``; ``engine`` names the recognizer that made the
    text and ``error`` says why a ``failed`` one failed (e.g. an undecodable format)."""

    id: UUID
    file_id: UUID
    memory_id: UUID | None = None
    message_id: UUID | None = None
    text: str = ""
    confidence: float = 0.0
    language: str = ""
    duration: float = 0.0
    status: str = "processing"  # processing, completed or failed
    segments: list[TranscriptSegment] = []
    engine: str | None = None
    error: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Deleted(Resource, kw_only=True):
    """Event data of a deletion: the id, and the memory it belonged to when it has one."""

    id: UUID
    memory_id: UUID | None = None


class ReadMarker(Resource, kw_only=True):
    """Event data of ``memory.read``: the memory's messages up to ``seq`` are read."""

    memory_id: UUID
    seq: int


class Pagination(Resource, kw_only=True):
    page: int
    limit: int
    total: int
    total_pages: int

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> Pagination:
        return cls(page=page, limit=limit, total=total, total_pages=-(-total // limit))


class Event(Resource, kw_only=True):
    """One entry of a user's event log: ``seq`` is per user, strictly increasing, gap-free."""

    seq: int
    type: str
    data: Any
    created_at: AwareDatetime
