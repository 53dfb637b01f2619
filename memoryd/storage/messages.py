"""Messages of a memory: per-memory gap-free seq, idempotent sends by clientMsgId."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg
import msgspec

from memoryd.errors import Conflict, NotFound, ValidationFailed
from memoryd.protocol.models import Deleted, Event, Message
from memoryd.storage.database import Database, Observe, unobserved
from memoryd.storage.events import append_event
from memoryd.storage.files import (
    claim_attachments,
    files_of,
    finished_transcripts,
    with_files,
)
from memoryd.storage.group_commit import GroupCommit
from memoryd.storage.jobs import NewJob, enqueue
from memoryd.storage.rows import MESSAGE_COLUMNS, set_clause, to_model, to_models
from memoryd.storage.whatsapp import PROVIDER as WHATSAPP
from memoryd.storage.whatsapp import OutboundTarget


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

    @property
    def fits_one_statement(self) -> bool:
        """No attachments to claim and no parent to check: `_SEND_PLAIN` can store it."""
        return not self.attachments and self.parent_id is None


@dataclass(frozen=True)
class SendContext:
    """What a send's transaction read with its seq, in one statement, before the message
    is written: the memory's metadata and, in a WhatsApp thread, its contact."""

    memory_metadata: Any
    whatsapp: OutboundTarget | None


# What planners are shown before a send's statement when storage is asked to try the
# one-statement path: no memory metadata they read, no WhatsApp thread. The statement
# then writes only if the memory really is like that (see `_SEND_PLAIN`).
PLAIN_CONTEXT = SendContext(memory_metadata={}, whatsapp=None)


@dataclass(frozen=True)
class PlainSend:
    """A send its planners left alone on `PLAIN_CONTEXT`: storage may write it in one
    statement if the memory has none of ``metadata_keys`` (the keys of the memory's
    metadata that planners read) and is no WhatsApp thread."""

    metadata_keys: tuple[str, ...] = ()


class TxStep(Protocol):
    """A check or side effect that storage runs in a message's transaction, right after
    the message row is written (a send), changed (an edit) or deleted. Defined in
    storage (it holds the SQL); a handler only builds one. Raising a `ClientError`
    refuses the change: the whole transaction rolls back."""

    async def run(self, conn: asyncpg.Connection, message: Message) -> None: ...


# Called in a message's transaction with the message as stored, after an edit, or as it
# was before a delete: the jobs and steps to add to that transaction.
ChangeHook = Callable[[Message], Awaitable["ChangePlan"]]
# Builds the durable jobs of a message inside its transaction, once the row exists. May
# raise a `ClientError` to refuse the change (the transaction rolls back).
JobFactory = Callable[[Message], Awaitable[NewJob | Sequence[NewJob] | None]]


@dataclass
class SendPlan:
    """What a send stores: the message as planned, its jobs, its in-transaction steps."""

    message: NewMessage
    jobs: Sequence[JobFactory] = ()
    steps: Sequence[TxStep] = ()
    hooks: Sequence[ChangeHook] = ()  # given the stored message, like an edit's hook


@dataclass
class ChangePlan:
    """What an edit or a delete adds to its transaction (after the row changed)."""

    jobs: list[NewJob] = field(default_factory=list)
    steps: list[TxStep] = field(default_factory=list)


# Called in the transaction after the replay check: refuse (raise), or say what to store.
Planner = Callable[[SendContext, NewMessage], Awaitable["SendPlan"]]


@dataclass(frozen=True)
class MessageWindow:
    page: int = 1
    limit: int = 50
    before: datetime | None = None
    after: datetime | None = None
    sort_order: str = "desc"


# The first statement of a send: an earlier message with its clientMsgId (then no seq is
# taken), else the next per-memory seq (locking the memory row until commit), the
# memory's metadata and, in a WhatsApp thread, the contact and whether the number is
# connected. One round trip.
_SEND_CONTEXT = f"""
    WITH earlier AS (
        SELECT client_msg_id FROM messages WHERE user_id = $1 AND client_msg_id = $3
    ), bumped AS (
        UPDATE memories SET last_message_seq = last_message_seq + 1,
            message_count = message_count + 1
        WHERE user_id = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM earlier)
        RETURNING last_message_seq, metadata
    )
    SELECT (SELECT client_msg_id FROM earlier) AS earlier,
           b.last_message_seq AS seq, b.metadata,
           c.wa_id, c.name AS wa_name, COALESCE(s.is_enabled, FALSE) AS wa_connected
    FROM (SELECT 1) AS one
    LEFT JOIN bumped b ON TRUE
    LEFT JOIN whatsapp_contacts c ON c.user_id = $1 AND c.memory_id = $2
    LEFT JOIN sync_settings s ON s.user_id = $1 AND s.provider = '{WHATSAPP}'"""


# The whole of a plain send (no attachments, parent, steps, jobs or hooks) in one
# statement, so one round trip and one implicit transaction: the clientMsgId replay
# look-up, the per-memory seq (the memory row stays locked until commit, as in the
# transaction path), the insert, the user's event head and the event. It writes only
# when the send is as plain as the planners were told beforehand: no earlier message
# with the clientMsgId, no WhatsApp thread, and none of the memory-metadata keys a
# planner reads ($10). Else it writes nothing and `create` takes the transaction path.
# The event payload is the message the application encoded ($9, seq left out), with the
# seq this statement took set in SQL, so nothing is decoded or re-encoded on the way.
_SEND_PLAIN = f"""
    WITH earlier AS (
        SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 AND client_msg_id = $3
    ), bumped AS (
        UPDATE memories SET last_message_seq = last_message_seq + 1,
            message_count = message_count + 1
        WHERE user_id = $1 AND id = $2 AND NOT EXISTS (SELECT 1 FROM earlier)
          AND NOT EXISTS (
              SELECT 1 FROM whatsapp_contacts c WHERE c.user_id = $1 AND c.memory_id = $2)
          AND (metadata IS NULL OR jsonb_typeof(metadata) = 'null'
               OR (jsonb_typeof(metadata) = 'object' AND NOT metadata ?| $10::text[]))
        RETURNING last_message_seq
    ), inserted AS (
        INSERT INTO messages (id, memory_id, user_id, seq, client_msg_id, content,
            message_type, metadata, is_ai_generated, status, created_at, updated_at)
        SELECT $4, $2, $1, last_message_seq, $3, $5, $6, $7, FALSE, $8, $11, $11
        FROM bumped
        RETURNING seq
    ), head AS (
        INSERT INTO user_event_heads (user_id, head_seq) SELECT $1, 1 FROM inserted
        ON CONFLICT (user_id) DO UPDATE SET head_seq = user_event_heads.head_seq + 1
        RETURNING head_seq
    ), logged AS (
        INSERT INTO user_events (user_id, seq, type, payload)
        SELECT $1, h.head_seq, 'message.created', $9::jsonb || jsonb_build_object('seq', i.seq)
        FROM head h, inserted i
        RETURNING seq, created_at
    )
    SELECT (SELECT seq FROM inserted) AS message_seq,
           l.seq AS event_seq, l.created_at AS event_at, e.*
    FROM (SELECT 1) AS one
    LEFT JOIN logged l ON TRUE
    LEFT JOIN earlier e ON TRUE"""

_raw_json = msgspec.json.Encoder().encode


def _memory_not_found() -> NotFound:
    return NotFound("Memory not found")


_MESSAGE_KEYS = tuple(
    c.strip().split(" AS ")[-1] for c in MESSAGE_COLUMNS.replace("\n", " ").split(",")
)


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Plain sends of many users share a round trip and a commit (group commit).
        self.plain_sends = GroupCommit(db, _SEND_PLAIN)
        self._observe: Observe = unobserved

    @property
    def observe(self) -> Observe:
        """Told each stage of a send (the server sets its histogram: `Metrics.send_stage`)."""
        return self._observe

    @observe.setter
    def observe(self, observe: Observe) -> None:
        self._observe = self.plain_sends.observe = observe

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
        plan: Planner | None = None,
        plain: PlainSend | None = None,
    ) -> tuple[Message, Event | None]:
        """Store a message; return it with its event, or the earlier one and no event.

        With ``plain`` (the caller ran its planners beforehand on `PLAIN_CONTEXT` and they
        planned nothing beyond the message itself), a send with no attachments and no
        parent first tries the one-statement path `_SEND_PLAIN`; a replay comes back from
        it too. When the memory turns out not to be plain, that statement wrote nothing
        and the transaction path below runs, planners and all.

        In one transaction: the first statement takes the per-memory seq and reads the
        `SendContext`; then ``plan`` (the send pipeline's planners) decides what to store,
        or refuses; the message is inserted, the plan's steps run and its jobs are
        enqueued, and ``message.created`` is appended. The message, its jobs and its
        event commit together or not at all.

        The same ``client_msg_id`` twice stores one message. The first statement also
        looks for an earlier message with it and then takes no seq: the earlier message
        comes back and ``plan`` never runs, so a replay is never refused by checks meant
        for new work and starts nothing. Two concurrent identical sends can both miss it;
        the second insert then hits the unique index, its transaction (and the seq it
        took) rolls back, and it returns the first one's message.
        """
        try:
            if plain is not None and new.fits_one_statement:
                done = await self._create_plain(user_id, memory_id, new, plain)
                if done is not None:
                    return done
            async with self.db.transaction(self.observe) as conn:
                row = await conn.fetchrow(_SEND_CONTEXT, user_id, memory_id, new.client_msg_id)
                assert row is not None
                if row["earlier"] is not None:
                    earlier = await self._replay(user_id, memory_id, row["earlier"], conn)
                    if earlier is not None:
                        return earlier, None
                seq = row["seq"]
                if seq is None:
                    raise _memory_not_found()
                target = None
                if row["wa_id"] is not None:
                    target = OutboundTarget(row["wa_id"], row["wa_name"], row["wa_connected"])
                planned = SendPlan(new)
                if plan is not None:
                    planned = await plan(SendContext(row["metadata"], target), new)
                new = planned.message
                if new.parent_id is not None:
                    await self._check_parent(conn, user_id, memory_id, new.parent_id)
                inserted = await conn.fetchrow(
                    f"""INSERT INTO messages (memory_id, user_id, seq, client_msg_id, content,
                            message_type, metadata, attachments, is_ai_generated,
                            parent_message_id, status)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                        RETURNING {MESSAGE_COLUMNS}""",
                    memory_id, user_id, seq, new.client_msg_id, new.content,
                    new.message_type, new.metadata, [str(a) for a in new.attachments],
                    new.is_ai_generated, new.parent_id, new.status,
                )  # fmt: skip
                message = to_model(Message, inserted)
                if new.attachments:  # the sender's unattached files, else 400
                    files = await claim_attachments(
                        conn, user_id, memory_id, message.id, new.attachments
                    )
                    message = msgspec.structs.replace(message, files=files)
                    message = await finished_transcripts(conn, message)
                for step in planned.steps:
                    await step.run(conn, message)
                for factory in planned.jobs:
                    built = await factory(message)
                    for job in [built] if isinstance(built, NewJob) else built or ():
                        await enqueue(conn, job)
                for hook in planned.hooks:
                    await _apply(conn, message, await hook(message))
                return message, await append_event(conn, user_id, "message.created", message)
        except asyncpg.UniqueViolationError:
            assert new.client_msg_id is not None
            earlier = await self._replay(user_id, memory_id, new.client_msg_id)
            if earlier is None:
                raise
            return earlier, None

    async def _create_plain(
        self, user_id: UUID, memory_id: UUID, new: NewMessage, plain: PlainSend
    ) -> tuple[Message, Event | None] | None:
        """`_SEND_PLAIN`: the message and its event, the earlier message of a replay, or
        None when the statement wrote nothing (take the transaction path)."""
        now = datetime.now(UTC)
        message = Message(
            id=uuid4(), memory_id=memory_id, user_id=user_id, seq=0,
            client_msg_id=new.client_msg_id, content=new.content,
            message_type=new.message_type, metadata=new.metadata, status=new.status,
            created_at=now, updated_at=now,
        )  # fmt: skip
        payload = msgspec.Raw(_raw_json(message))
        # A concurrent twin that committed first: UniqueViolationError, answered by
        # `create` as on the transaction path.
        row = await self.plain_sends.run(
            user_id, user_id, memory_id, new.client_msg_id, message.id, new.content,
            new.message_type, new.metadata, new.status, payload,
            list(plain.metadata_keys), now,
        )  # fmt: skip
        assert row is not None
        if row["id"] is not None:  # a replay
            earlier = Message(**{k: row[k] for k in _MESSAGE_KEYS})
            return _checked_replay(earlier, memory_id), None
        if row["message_seq"] is None:
            return None
        message = msgspec.structs.replace(message, seq=row["message_seq"])
        event = Event(seq=row["event_seq"], type="message.created", data=message,
                      created_at=row["event_at"])  # fmt: skip
        return message, event

    async def _replay(
        self,
        user_id: UUID,
        memory_id: UUID,
        client_msg_id: str,
        conn: asyncpg.Connection | None = None,
    ) -> Message | None:
        row = await (conn or self.db).fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 AND client_msg_id = $2",
            user_id,
            client_msg_id,
        )
        return _checked_replay(to_model(Message, row), memory_id) if row else None

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
        self,
        user_id: UUID,
        message_id: UUID,
        changes: dict[str, Any],
        *,
        hook: ChangeHook | None = None,
    ) -> tuple[Message, Event] | None:
        """Apply ``changes``; ``hook`` adds jobs and steps for the edited message (e.g.
        re-index it) to the same transaction. None when the message is not the user's."""
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
            message = await with_files(conn, user_id, to_model(Message, row))
            if hook is not None:
                await _apply(conn, message, await hook(message))
            return message, await append_event(conn, user_id, "message.updated", message)

    async def delete(
        self, user_id: UUID, message_id: UUID, *, hook: ChangeHook | None = None
    ) -> Event | None:
        """Delete a message. ``hook`` gets it as it is and adds jobs and steps (drop it
        from an index, clean up its files) to the same transaction; they run before the
        row goes, so a step still sees what the delete cascades to (its ``files`` rows)."""
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
            if hook is not None:
                row = await conn.fetchrow(
                    f"""SELECT {MESSAGE_COLUMNS} FROM messages
                        WHERE user_id = $1 AND id = $2 FOR UPDATE""",
                    user_id,
                    message_id,
                )
                if row is None:
                    return None
                message = to_model(Message, row)
                await _apply(conn, message, await hook(message))
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


def _checked_replay(earlier: Message, memory_id: UUID) -> Message:
    if earlier.memory_id != memory_id:
        raise Conflict(
            "clientMsgId was already used for a message in another memory",
            details=[{"field": "clientMsgId", "message": "already used"}],
        )
    return earlier


async def _apply(conn: asyncpg.Connection, message: Message, plan: ChangePlan) -> None:
    for step in plan.steps:
        await step.run(conn, message)
    for job in plan.jobs:
        await enqueue(conn, job)
