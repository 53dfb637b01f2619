"""Memo's wire types: the seed's ``/api/ai/*`` bodies, ``ai.ask`` / ``ai.cancel`` request
bodies and the ``ai.delta`` signal.

The seed plan's shapes are kept (``ChatResponse.metadata``, ``alternativeCategories``,
``keyPoints``, ``wordCount``); categorize and summarize answers also carry the same
``metadata`` as chat, so a client can tell which model answered.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from memoryd.protocol.models import Message
from memoryd.protocol.requests import MAX_CONTENT_CEILING, ClientMsgId, Content

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CEILING)]
Style = Annotated[
    str,
    msgspec.Meta(
        pattern="^(brief|detailed|bullet-points)$",
        extra={"message": "must be brief, detailed or bullet-points"},
    ),
]
CategoryNames = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
    msgspec.Meta(max_length=50),
]


class AIMetadata(msgspec.Struct, rename="camel", kw_only=True):
    """Which model answered, the tokens it used (0 for the local responder) and the time
    the call took in milliseconds."""

    tokens_used: int
    processing_time: int
    model: str


class ChatRequest(msgspec.Struct, rename="camel", kw_only=True):
    """A question to Memo. With ``memoryId``, the memory's thread is part of the context."""

    message: Text
    memory_id: UUID | None = None
    context: Any = None  # any JSON the app wants Memo to consider
    model: Annotated[str, msgspec.Meta(max_length=100)] | None = None  # informational only


class ChatResponse(msgspec.Struct, rename="camel", kw_only=True):
    """``confidence`` is 0..1; ``suggestions`` are titles of memories related to the answer."""

    response: str
    confidence: float
    suggestions: list[str]
    metadata: AIMetadata


class CategorizeRequest(msgspec.Struct, rename="camel", kw_only=True):
    """Content to file; without ``existingCategories``, the caller's own categories."""

    content: Text
    existing_categories: CategoryNames = []


class CategoryScore(msgspec.Struct, rename="camel", kw_only=True):
    category: str
    confidence: float


class CategorizeResponse(msgspec.Struct, rename="camel", kw_only=True):
    suggested_category: str
    confidence: float
    alternative_categories: list[CategoryScore]
    metadata: AIMetadata


class SummarizeRequest(msgspec.Struct, rename="camel", kw_only=True):
    """``maxLength`` is in words."""

    content: Text
    max_length: Annotated[int, msgspec.Meta(ge=5, le=2000)] = 150
    style: Style = "brief"


class SummarizeResponse(msgspec.Struct, rename="camel", kw_only=True):
    """``wordCount`` counts the words of ``summary``."""

    summary: str
    key_points: list[str]
    word_count: int
    metadata: AIMetadata


class AskRequest(msgspec.Struct, rename="camel", kw_only=True):
    """Ask Memo about a thread; ``content`` is first stored as the user's question."""

    content: Content | None = None
    client_msg_id: ClientMsgId | None = None


class AskResult(msgspec.Struct, rename="camel", kw_only=True):
    """``replyTo``: the message Memo answers. ``message``: the question stored, if any.
    ``started`` is false when that message already has (or is getting) a reply."""

    reply_to: UUID
    message: Message | None
    started: bool


class CancelRequest(msgspec.Struct, rename="camel", kw_only=True):
    """Cancel the reply to ``replyTo``, or every reply in progress in ``memoryId``."""

    memory_id: UUID | None = None
    reply_to: UUID | None = None

    def __post_init__(self) -> None:
        if self.memory_id is None and self.reply_to is None:
            raise ValueError("give replyTo or memoryId")


class CancelResult(msgspec.Struct, rename="camel", kw_only=True):
    """The messages whose replies were cancelled (each becomes a ``cancelled`` message)."""

    cancelled: list[UUID]


class AIDelta(msgspec.Struct, rename="camel", kw_only=True):
    """Data of the ``ai.delta`` signal: the next piece of Memo's reply to ``replyTo``.

    ``index`` counts from 0 per attempt; a delta with index 0 starts the text over (a
    reply that was retried streams again from the start)."""

    memory_id: UUID
    reply_to: UUID
    index: int
    delta: str
