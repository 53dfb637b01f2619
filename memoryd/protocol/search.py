"""Search requests and results, shared by ``GET /api/search`` and the socket's ``search``.

A result is a memory with the messages inside it that matched (id, per-memory seq and a
highlighted snippet), so that a client can open the thread at the spot. ``modes`` says
which rankings were used: ``text`` (full text and trigrams), ``semantic`` (embeddings).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from memoryd.protocol.models import AwareDatetime, Memory

SearchMode = Annotated[
    str,
    msgspec.Meta(
        pattern="^(text|semantic|hybrid)$", extra={"message": "must be text, semantic or hybrid"}
    ),
]
SearchLimit = Annotated[int, msgspec.Meta(ge=1, le=50)]
Query = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
SearchTags = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=50)]], msgspec.Meta(max_length=10)
]
Cursor = Annotated[str, msgspec.Meta(max_length=200)]


class SearchRequest(msgspec.Struct, rename="camel", kw_only=True):
    """`mode` defaults to `hybrid` when an embedder is configured, else `text`; `tags`
    keeps memories with every tag given; `from` and `to` bound when a message (or, for a
    memory's own text, the memory) was created."""

    q: Query
    mode: SearchMode | None = None
    limit: SearchLimit = 20
    cursor: Cursor | None = None
    category_id: UUID | None = None
    tags: SearchTags = []
    from_: datetime | None = msgspec.field(default=None, name="from")
    to: datetime | None = None


class MessageMatch(msgspec.Struct, rename="camel", kw_only=True):
    """A matching message. `snippet` is HTML-escaped text with the matched words inside
    `<mark>` and `</mark>` (no other markup)."""

    id: UUID
    seq: int
    snippet: str
    created_at: AwareDatetime
    is_ai_generated: bool = False
    score: float = 0.0


class SearchResult(msgspec.Struct, rename="camel", kw_only=True):
    """One memory; `snippet` is set when the memory's own text (title, description, tags,
    content) matched; `messages` are its best matching messages, best first."""

    memory: Memory
    score: float
    messages: list[MessageMatch] = []
    snippet: str | None = None


class SearchPage(msgspec.Struct, rename="camel", kw_only=True):
    """`modes`: the rankings used for this answer (`text`, `semantic`); `mode` the mode in
    force; `nextCursor` fetches the next page, absent on the last one."""

    results: list[SearchResult]
    mode: str
    modes: list[str]
    next_cursor: str | None = None
    query_embedding_ms: float | None = None  # the time the query took to embed, if it was
