"""Memo's data: the ``ai_interactions`` record, retrieval over a user's own writing, the
category profiles the categoriser compares against, and AI reply jobs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from memoryd.protocol.models import Message
from memoryd.storage.database import Database
from memoryd.storage.rows import MESSAGE_COLUMNS, to_model

AI_REPLY = "ai.reply"  # the job kind of Memo's reply to a message in a thread

_WORD = re.compile(r"\w{2,}", re.UNICODE)
_MAX_QUERY_WORDS = 32

# The text of a memory: title, description, tags and every string inside ``content``.
_MEMORY_TEXT = """concat_ws(' ', m.title, m.description, array_to_string(m.tags, ' '),
    (SELECT string_agg(v #>> '{}', ' ') FROM jsonb_path_query(m.content, 'strict $.**') v
     WHERE jsonb_typeof(v) = 'string'))"""


@dataclass(frozen=True)
class Interaction:
    """One AI call, as the seed's ``ai_interactions`` table records it."""

    user_id: UUID
    kind: str  # chat | reply | categorize | summarize
    input: Any
    output: Any
    model: str
    tokens: int
    processing_ms: int
    status: str  # completed | failed | cancelled
    error: str | None = None
    memory_id: UUID | None = None


@dataclass(frozen=True)
class Snippet:
    """A memory or a message of the user that matches a query, with its rank."""

    memory_id: UUID
    message_id: UUID | None
    title: str | None
    text: str
    rank: float


@dataclass(frozen=True)
class CategoryProfile:
    name: str
    description: str | None
    sample: str  # titles, descriptions and tags of its most recent memories


@dataclass(frozen=True)
class CancelledReply:
    message_id: UUID  # the message the reply was for (the job's dedupe key)
    payload: Any
    live: bool  # a node holds a valid lease: it stores the cancelled reply itself


def or_query(text: str) -> str | None:
    """A ``to_tsquery`` that matches any word of ``text`` (``\\w`` runs only, so no
    tsquery syntax can get in); None when there is no word."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        seen.setdefault(word)
    return " | ".join(list(seen)[:_MAX_QUERY_WORDS]) or None


class AIStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, i: Interaction) -> UUID:
        """Insert one ``ai_interactions`` row (its memory only if it is still the user's)."""
        return await self.db.fetchval(  # type: ignore[no-any-return]
            """INSERT INTO ai_interactions (user_id, memory_id, interaction_type, input_data,
                   output_data, model_used, tokens_used, processing_time_ms, status,
                   error_message)
               VALUES ($1, (SELECT id FROM memories WHERE user_id = $1 AND id = $2),
                       $3, $4, $5, $6, $7, $8, $9, $10)
               RETURNING id""",
            i.user_id, i.memory_id, i.kind, i.input, i.output, i.model, i.tokens,
            i.processing_ms, i.status, i.error[:2000] if i.error else None,
        )  # fmt: skip

    async def interactions(self, user_id: UUID, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            """SELECT id, memory_id, interaction_type, input_data, output_data, model_used,
                      tokens_used, processing_time_ms, status, error_message, created_at
               FROM ai_interactions WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2""",
            user_id,
            limit,
        )
        return [dict(r.items()) for r in rows]

    async def relevant(
        self, user_id: UUID, query: str, *, exclude_memory: UUID | None = None, limit: int = 5
    ) -> list[Snippet]:
        """The user's memories and messages that share words with ``query``, best first.

        PostgreSQL full text search (English stemming) over any word of the query, ranked
        by ``ts_rank``. Memo's own messages and failed or cancelled ones are left out, and
        so is ``exclude_memory`` (the thread being answered, which the caller has already).
        """
        tsquery = or_query(query)
        if tsquery is None:
            return []
        rows = await self.db.fetch(
            f"""WITH q AS (SELECT to_tsquery('english', $2) AS query),
                docs AS (
                    SELECT m.id AS memory_id, NULL::uuid AS message_id, m.title,
                           {_MEMORY_TEXT} AS body
                    FROM memories m
                    WHERE m.user_id = $1 AND m.id IS DISTINCT FROM $3
                    UNION ALL
                    SELECT msg.memory_id, msg.id, m.title, msg.content
                    FROM messages msg JOIN memories m ON m.id = msg.memory_id
                    WHERE msg.user_id = $1 AND msg.memory_id IS DISTINCT FROM $3
                      AND NOT msg.is_ai_generated AND msg.status = 'sent')
                SELECT memory_id, message_id, title, left(body, 2000) AS text,
                       ts_rank(to_tsvector('english', body), q.query) AS rank
                FROM docs, q
                WHERE to_tsvector('english', body) @@ q.query
                ORDER BY rank DESC, message_id NULLS FIRST
                LIMIT $4""",
            user_id,
            tsquery,
            exclude_memory,
            limit,
        )
        return [Snippet(**dict(r.items())) for r in rows]

    async def category_profiles(self, user_id: UUID) -> list[CategoryProfile]:
        rows = await self.db.fetch(
            """SELECT c.name, c.description,
                      coalesce((SELECT left(string_agg(concat_ws(' ', m.title, m.description,
                                        array_to_string(m.tags, ' ')), ' '), 4000)
                                FROM (SELECT title, description, tags FROM memories
                                      WHERE user_id = $1 AND category_id = c.id
                                      ORDER BY updated_at DESC LIMIT 20) m), '') AS sample
               FROM memory_categories c WHERE c.user_id = $1
               ORDER BY c.sort_order, lower(c.name)""",
            user_id,
        )
        return [CategoryProfile(**dict(r.items())) for r in rows]

    async def latest_question(self, user_id: UUID, memory_id: UUID) -> Message | None:
        """The thread's newest message that is not Memo's (what a bare ``ai.ask`` answers)."""
        row = await self.db.fetchrow(
            f"""SELECT {MESSAGE_COLUMNS} FROM messages
                WHERE user_id = $1 AND memory_id = $2 AND NOT is_ai_generated
                ORDER BY seq DESC LIMIT 1""",
            user_id,
            memory_id,
        )
        return to_model(Message, row) if row else None

    async def cancel_replies(
        self, user_id: UUID, *, message_id: UUID | None = None, memory_id: UUID | None = None
    ) -> list[CancelledReply]:
        """Cancel the user's pending or running reply jobs: the one for ``message_id``, or
        every one in ``memory_id``. Returns what was cancelled; ``live`` says whether a node
        was running it with a valid lease at that moment."""
        rows = await self.db.fetch(
            """WITH target AS (
                   SELECT id, status, lease_until FROM jobs
                   WHERE kind = $1 AND user_id = $2 AND status IN ('pending', 'running')
                     AND (dedupe_key = $3 OR payload->>'memoryId' = $4)
                   FOR UPDATE)
               UPDATE jobs j SET status = 'cancelled', lease_until = NULL, updated_at = now()
               FROM target t WHERE j.id = t.id
               RETURNING j.dedupe_key, j.payload,
                         (t.status = 'running' AND t.lease_until > now()) AS live""",
            AI_REPLY,
            user_id,
            str(message_id) if message_id else None,
            str(memory_id) if memory_id else None,
        )
        return [
            CancelledReply(message_id=UUID(r["dedupe_key"]), payload=r["payload"], live=r["live"])
            for r in rows
        ]

    async def job_status(self, job_id: UUID) -> str | None:
        """A job's status (the streaming reply watches for ``cancelled``)."""
        value = await self.db.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
        return str(value) if value is not None else None
