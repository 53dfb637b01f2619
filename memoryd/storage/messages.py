"""Messages of a memory: per-memory gap-free seq, idempotent sends by clientMsgId."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from memoryd.errors import Conflict, NotFound, ValidationFailed
from memoryd.protocol.models import Deleted, Event, Message
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.files import (  # [files]
    claim_attachments,
    files_of,
    finished_transcripts,
    with_files,
)
from memoryd.storage.jobs import NewJob, enqueue
from memoryd.storage.rows import MESSAGE_COLUMNS, set_clause, to_model, to_models


@dataclass(frozen=True)
class NewMessage:
    content: str
    message_type: str = "text"
    metadata: Any = None
    attachments: tuple[UUID, ...] = ()
    parent_id: UUID | None = None
    client_msg_id: str | None = None
    is_ai_generated: bool = False
    status: str = "sent"


@dataclass(frozen=True)
class MessageWindow:
    page: int = 1
    limit: int = 50
    before: datetime | None = None
    after: datetime | None = None
    sort_order: str = "desc"


def _memory_not_found() -> NotFound:
    return NotFound("Memory not found")


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def by_client_msg_id(self, user_id: UUID, client_msg_id: str) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 AND client_msg_id = $2",
            user_id,
            client_msg_id,
        )
        return await with_files(self.db, user_id, to_model(Message, row)) if row else None

    async def create(
        self,
        user_id: UUID,
        memory_id: UUID,
        new: NewMessage,
        *,
        job: Callable[[Message], NewJob | Sequence[NewJob] | None] | None = None,
    ) -> tuple[Message, Event | None]:
        """Store a message; return it with its event, or the earlier one and no event.

        ``job`` builds a durable job for the new message (a WhatsApp send, an AI reply),
        enqueued in the same transaction: the message and its job commit together or not
        at all. An idempotent replay enqueues nothing.

        The same ``client_msg_id`` twice (also concurrently) stores one message: the
        second insert hits the unique index, its transaction (and the seq it took) rolls
        back, and it returns the first one's message. No look-up goes first: a resend is
        rare, and a round trip on every send is not.
        """
        try:
            async with self.db.transaction() as conn:
                seq = await conn.fetchval(
                    """UPDATE memories SET last_message_seq = last_message_seq + 1,
                           message_count = message_count + 1
                       WHERE user_id = $1 AND id = $2 RETURNING last_message_seq""",
                    user_id,
                    memory_id,
                )
                if seq is None:
                    raise _memory_not_found()
                if new.parent_id is not None:
                    await self._check_parent(conn, user_id, memory_id, new.parent_id)
                row = await conn.fetchrow(
                    f"""INSERT INTO messages (memory_id, user_id, seq, client_msg_id, content,
                            message_type, metadata, attachments, is_ai_generated,
                            parent_message_id, status)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                        RETURNING {MESSAGE_COLUMNS}""",
                    memory_id, user_id, seq, new.client_msg_id, new.content,
                    new.message_type, new.metadata, [str(a) for a in new.attachments],
                    new.is_ai_generated, new.parent_id, new.status,
                )  # fmt: skip
                message = to_model(Message, row)
                if new.attachments:  # [files] the sender's unattached files, else 400
                    files = await claim_attachments(
                        conn, user_id, memory_id, message.id, new.attachments
                    )
                    message = msgspec.structs.replace(message, files=files)
                    message = await finished_transcripts(conn, message)  # [files]
                if job is not None:
                    new_jobs = job(message)
                    for new_job in [new_jobs] if isinstance(new_jobs, NewJob) else new_jobs or ():
                        await enqueue(conn, new_job)
                return message, await append_event(conn, user_id, "message.created", message)
        except asyncpg.UniqueViolationError:
            assert new.client_msg_id is not None
            earlier = await self._replay(user_id, memory_id, new.client_msg_id)
            if earlier is None:
                raise
            return earlier, None

    async def _replay(self, user_id: UUID, memory_id: UUID, client_msg_id: str) -> Message | None:
        earlier = await self.by_client_msg_id(user_id, client_msg_id)
        if earlier is not None and earlier.memory_id != memory_id:
            raise Conflict(
                "clientMsgId was already used for a message in another memory",
                details=[{"field": "clientMsgId", "message": "already used"}],
            )
        return earlier

    @staticmethod
    async def _check_parent(
        conn: asyncpg.Connection, user_id: UUID, memory_id: UUID, parent_id: UUID
    ) -> None:
        found = await conn.fetchval(
            "SELECT 1 FROM messages WHERE user_id = $1 AND memory_id = $2 AND id = $3",
            user_id,
            memory_id,
            parent_id,
        )
        if not found:
            raise ValidationFailed(
                "Validation failed",
                details=[{"field": "parentId", "message": "no such message in this memory"}],
            )

    async def get(self, user_id: UUID, message_id: UUID) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 AND id = $2",
            user_id,
            message_id,
        )
        return await with_files(self.db, user_id, to_model(Message, row)) if row else None

    async def page(
        self, user_id: UUID, memory_id: UUID, window: MessageWindow
    ) -> tuple[list[Message], int]:
        """One page of a memory's messages; NotFound when the memory is not the user's."""
        owned = await self.db.fetchval(
            "SELECT 1 FROM memories WHERE user_id = $1 AND id = $2", user_id, memory_id
        )
        if not owned:
            raise _memory_not_found()
        where = "user_id = $1 AND memory_id = $2"
        args: list[Any] = [user_id, memory_id]
        if window.before is not None:
            args.append(window.before)
            where += f" AND created_at < ${len(args)}"
        if window.after is not None:
            args.append(window.after)
            where += f" AND created_at > ${len(args)}"
        total = await self.db.fetchval(f"SELECT count(*) FROM messages WHERE {where}", *args)
        order = "ASC" if window.sort_order == "asc" else "DESC"
        rows = await self.db.fetch(
            f"""SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where}
                ORDER BY seq {order} LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",
            *args,
            window.limit,
            (window.page - 1) * window.limit,
        )
        return await files_of(self.db, user_id, to_models(Message, rows)), int(total)

    async def history(
        self, user_id: UUID, memory_id: UUID, before_seq: int | None, limit: int
    ) -> list[Message]:
        """The ``limit`` messages just before ``before_seq`` (or the newest), oldest first."""
        owned = await self.db.fetchval(
            "SELECT 1 FROM memories WHERE user_id = $1 AND id = $2", user_id, memory_id
        )
        if not owned:
            raise _memory_not_found()
        rows = await self.db.fetch(
            f"""SELECT {MESSAGE_COLUMNS} FROM messages
                WHERE user_id = $1 AND memory_id = $2 AND seq < $3
                ORDER BY seq DESC LIMIT $4""",
            user_id,
            memory_id,
            before_seq if before_seq is not None else 2**62,
            limit,
        )
        return (await files_of(self.db, user_id, to_models(Message, rows)))[::-1]

    async def update(
        self, user_id: UUID, message_id: UUID, changes: dict[str, Any]
    ) -> tuple[Message, Event] | None:
        sets, values = set_clause(changes, 3)
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""UPDATE messages SET {sets}, updated_at = now()
                    WHERE user_id = $1 AND id = $2 RETURNING {MESSAGE_COLUMNS}""",
                user_id,
                message_id,
                *values,
            )
            if row is None:
                return None
            message = await with_files(conn, user_id, to_model(Message, row))  # [files]
            return message, await append_event(conn, user_id, "message.updated", message)

    async def delete(self, user_id: UUID, message_id: UUID) -> Event | None:
        async with self.db.transaction() as conn:
            # Lock the memory before the message, the order sends (memory, then the parent
            # row their foreign key locks) and memory deletes (memory, then its messages)
            # take: the other order deadlocks with them.
            locked = await conn.fetchval(
                """SELECT m.id FROM memories m JOIN messages msg ON msg.memory_id = m.id
                   WHERE msg.user_id = $1 AND msg.id = $2 FOR NO KEY UPDATE OF m""",
                user_id,
                message_id,
            )
            if locked is None:
                return None
            memory_id = await conn.fetchval(
                "DELETE FROM messages WHERE user_id = $1 AND id = $2 RETURNING memory_id",
                user_id,
                message_id,
            )
            if memory_id is None:
                return None
            await conn.execute(
                "UPDATE memories SET message_count = message_count - 1 WHERE id = $1", memory_id
            )
            data = Deleted(id=message_id, memory_id=memory_id)
            return await append_event(conn, user_id, "message.deleted", data)
