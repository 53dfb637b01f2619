"""WhatsApp bridge tables: connections (``sync_settings``), contacts and their threads,
the inbox (``jobs``), message delivery states and downloaded media (``files``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from memoryd.errors import Conflict
from memoryd.protocol.models import Category, Event, Memory, Message
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.jobs import NewJob, enqueue
from memoryd.storage.rows import CATEGORY_COLUMNS, MEMORY_COLUMNS, MESSAGE_COLUMNS, to_model

PROVIDER = "whatsapp"

# Delivery states only move forward, along this order: a status may replace exactly the
# earlier ones. Webhooks arrive out of order ("read" before "delivered"), and their jobs
# may run in any order, so the end state must not depend on the order: it is the
# furthest status reported. "failed" never undoes a delivery that was reported; a
# delivery reported after a failure is the better news, and wins.
_DELIVERY_ORDER = ("pending", "sent", "failed", "delivered", "read")
FORWARD_FROM: dict[str, tuple[str, ...]] = {
    status: _DELIVERY_ORDER[:i] for i, status in enumerate(_DELIVERY_ORDER) if i
}
# Meta's "sent" for a message we failed without hearing from Meta (no wamid recorded:
# the send's answer was lost, "Delivery unknown") replaces our guess; "delivered" and
# "read" replace any "failed" anyway.
_OVER_OUR_FAILURE = ("sent",)


@dataclass(frozen=True)
class WhatsAppConnection:
    """A user's connected number; ``access_token`` is the stored ciphertext."""

    user_id: UUID
    phone_number_id: str
    business_account_id: str | None
    display_phone_number: str | None
    access_token: str


@dataclass(frozen=True)
class SyncRow:
    provider: str
    is_enabled: bool
    sync_status: str
    last_sync_at: datetime | None
    updated_at: datetime
    settings: Any


@dataclass(frozen=True)
class JobSummary:
    pending: int
    failed: int
    next_run: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class ContactThread:
    """A contact and its thread; ``events`` were committed and must be published."""

    contact_id: UUID
    wa_id: str
    name: str | None
    memory_id: UUID
    events: tuple[Event, ...]


@dataclass(frozen=True)
class OutboundTarget:
    """The contact a WhatsApp thread sends to, and whether the user's number is connected."""

    wa_id: str
    name: str | None
    connected: bool


class WhatsAppStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- connections -------------------------------------------------------------------

    async def connect(self, user_id: UUID, encrypted_token: str, settings: dict[str, Any]) -> None:
        """Store (or replace) the user's connection; Conflict when another user holds the
        number (``settings["phoneNumberId"]``)."""
        try:
            await self.db.execute(
                """INSERT INTO sync_settings
                       (user_id, provider, is_enabled, credentials, settings, sync_status)
                   VALUES ($1, $2, TRUE, $3, $4, 'connected')
                   ON CONFLICT (user_id, provider) DO UPDATE SET is_enabled = TRUE,
                       credentials = EXCLUDED.credentials, settings = EXCLUDED.settings,
                       sync_status = 'connected', updated_at = now()""",
                user_id,
                PROVIDER,
                {"accessToken": encrypted_token},
                settings,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                "That WhatsApp number is connected to another account",
                code="whatsapp_number_taken",
                details=[{"field": "phoneNumber", "message": "connected to another account"}],
            ) from None

    async def disconnect(self, user_id: UUID) -> bool:
        """Forget the credentials; the row stays for the status. False if not connected."""
        status = await self.db.execute(
            """UPDATE sync_settings SET is_enabled = FALSE, credentials = NULL,
                   sync_status = 'disconnected', updated_at = now()
               WHERE user_id = $1 AND provider = $2 AND is_enabled""",
            user_id,
            PROVIDER,
        )
        return status.endswith(" 1")

    async def connection(self, user_id: UUID) -> WhatsAppConnection | None:
        row = await self.db.fetchrow(
            """SELECT credentials, settings FROM sync_settings
               WHERE user_id = $1 AND provider = $2 AND is_enabled""",
            user_id,
            PROVIDER,
        )
        if row is None or not isinstance(row["credentials"], dict):
            return None
        settings = row["settings"] if isinstance(row["settings"], dict) else {}
        return WhatsAppConnection(
            user_id=user_id,
            phone_number_id=str(settings.get("phoneNumberId", "")),
            business_account_id=settings.get("businessAccountId"),
            display_phone_number=settings.get("displayPhoneNumber"),
            access_token=str(row["credentials"].get("accessToken", "")),
        )

    async def users_for_numbers(self, phone_number_ids: Sequence[str]) -> dict[str, UUID]:
        """The user each connected phone number id routes to (unknown ids are absent)."""
        rows = await self.db.fetch(
            """SELECT settings->>'phoneNumberId' AS number, user_id FROM sync_settings
               WHERE provider = $1 AND is_enabled
                 AND settings->>'phoneNumberId' = ANY($2::text[])""",
            PROVIDER,
            list(phone_number_ids),
        )
        return {r["number"]: r["user_id"] for r in rows}

    async def sync_row(self, user_id: UUID) -> SyncRow | None:
        row = await self.db.fetchrow(
            """SELECT provider, is_enabled, sync_status, last_sync_at, updated_at, settings
               FROM sync_settings WHERE user_id = $1 AND provider = $2""",
            user_id,
            PROVIDER,
        )
        return SyncRow(**dict(row.items())) if row else None

    async def set_sync_state(self, user_id: UUID, *, synced: bool, status: str) -> None:
        """Record a sync outcome (``connected`` or ``error``) on a connected number."""
        await self.db.execute(
            """UPDATE sync_settings SET sync_status = $3,
                   last_sync_at = CASE WHEN $4 THEN now() ELSE last_sync_at END
               WHERE user_id = $1 AND provider = $2 AND is_enabled""",
            user_id,
            PROVIDER,
            status,
            synced,
        )

    # -- inbox and jobs ----------------------------------------------------------------

    async def enqueue_all(self, jobs: Sequence[NewJob]) -> int:
        """Store every job in one transaction; return how many were new (not duplicates)."""
        if not jobs:
            return 0
        created = 0
        async with self.db.transaction() as conn:
            for job in jobs:
                if await enqueue(conn, job) is not None:
                    created += 1
        return created

    async def job_summary(self, user_id: UUID, kinds: Sequence[str]) -> JobSummary:
        row = await self.db.fetchrow(
            """SELECT count(*) FILTER (WHERE status IN ('pending', 'running')) AS pending,
                      count(*) FILTER (WHERE status = 'failed') AS failed,
                      min(run_after) FILTER (WHERE status = 'pending') AS next_run,
                      (array_agg(last_error ORDER BY updated_at DESC)
                          FILTER (WHERE status = 'failed'))[1] AS last_error
               FROM jobs WHERE user_id = $1 AND kind = ANY($2::text[])
                 AND status IN ('pending', 'running', 'failed')""",
            user_id,
            list(kinds),
        )
        assert row is not None
        return JobSummary(
            pending=int(row["pending"]),
            failed=int(row["failed"]),
            next_run=row["next_run"],
            last_error=row["last_error"],
        )

    # -- contacts and threads ----------------------------------------------------------

    async def contact_thread(
        self,
        user_id: UUID,
        wa_id: str,
        name: str | None,
        *,
        category: tuple[str, str, str],
        title: str,
        metadata: dict[str, Any],
    ) -> ContactThread:
        """The contact's thread, created with the contact (and the category ``(name, icon,
        color)``) when missing. The contact row is locked first, so concurrent first
        messages of one contact make one thread."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                """INSERT INTO whatsapp_contacts (user_id, wa_id, name) VALUES ($1, $2, $3)
                   ON CONFLICT (user_id, wa_id) DO UPDATE
                       SET name = COALESCE(EXCLUDED.name, whatsapp_contacts.name),
                           updated_at = now()
                   RETURNING id, memory_id, name""",
                user_id,
                wa_id,
                name,
            )
            assert row is not None
            events: list[Event] = []
            memory_id: UUID | None = row["memory_id"]
            if memory_id is None:
                category_id = await self._category(conn, user_id, category, events)
                memory_row = await conn.fetchrow(
                    f"""INSERT INTO memories (user_id, category_id, title, metadata)
                        VALUES ($1, $2, $3, $4) RETURNING {MEMORY_COLUMNS}""",
                    user_id,
                    category_id,
                    title,
                    metadata,
                )
                memory = to_model(Memory, memory_row)
                events.append(await append_event(conn, user_id, "memory.created", memory))
                memory_id = memory.id
                await conn.execute(
                    "UPDATE whatsapp_contacts SET memory_id = $2 WHERE id = $1",
                    row["id"],
                    memory_id,
                )
            return ContactThread(row["id"], wa_id, row["name"], memory_id, tuple(events))

    @staticmethod
    async def _category(
        conn: asyncpg.Connection,
        user_id: UUID,
        category: tuple[str, str, str],
        events: list[Event],
    ) -> UUID:
        name, icon, color = category
        row = await conn.fetchrow(
            f"""INSERT INTO memory_categories (user_id, name, icon, color) VALUES ($1, $2, $3, $4)
                ON CONFLICT (user_id, lower(name)) DO NOTHING RETURNING {CATEGORY_COLUMNS}""",
            user_id,
            name,
            icon,
            color,
        )
        if row is not None:
            created = to_model(Category, row)
            events.append(await append_event(conn, user_id, "category.created", created))
            return created.id
        found: UUID = await conn.fetchval(
            "SELECT id FROM memory_categories WHERE user_id = $1 AND lower(name) = lower($2)",
            user_id,
            name,
        )
        return found

    async def outbound_target(self, user_id: UUID, memory_id: UUID) -> OutboundTarget | None:
        """The contact behind a WhatsApp thread, or None when the memory is not one."""
        row = await self.db.fetchrow(
            """SELECT c.wa_id, c.name, COALESCE(s.is_enabled, FALSE) AS connected
               FROM whatsapp_contacts c
               LEFT JOIN sync_settings s ON s.user_id = c.user_id AND s.provider = $3
               WHERE c.user_id = $1 AND c.memory_id = $2""",
            user_id,
            memory_id,
            PROVIDER,
        )
        if row is None:
            return None
        return OutboundTarget(row["wa_id"], row["name"], bool(row["connected"]))

    # -- messages ----------------------------------------------------------------------

    async def message_by_wamid(self, user_id: UUID, wamid: str) -> Message | None:
        row = await self.db.fetchrow(
            f"""SELECT {MESSAGE_COLUMNS} FROM messages
                WHERE user_id = $1 AND metadata->>'wamid' = $2""",
            user_id,
            wamid,
        )
        return to_model(Message, row) if row else None

    async def advance_status(
        self, user_id: UUID, message_id: UUID, status: str, metadata: dict[str, Any]
    ) -> tuple[Message, Event] | None:
        """Move a message's status forward (see `FORWARD_FROM`) and merge ``metadata`` into
        its metadata, with a ``message.updated`` event; None when it would move back."""
        allowed = FORWARD_FROM.get(status)
        if allowed is None:
            raise ValueError(f"unknown delivery status {status!r}")
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""UPDATE messages SET status = $3, updated_at = now(),
                        metadata = (CASE WHEN jsonb_typeof(metadata) = 'object'
                                         THEN metadata ELSE '{{}}'::jsonb END
                                    - CASE WHEN status = 'failed' THEN 'whatsappError'
                                           ELSE '' END) || $4::jsonb
                    WHERE user_id = $1 AND id = $2
                      AND (status = ANY($5::text[])
                           OR ($6 AND status = 'failed' AND metadata->>'wamid' IS NULL))
                    RETURNING {MESSAGE_COLUMNS}""",
                user_id,
                message_id,
                status,
                metadata,
                list(allowed),
                status in _OVER_OUR_FAILURE,
            )
            if row is None:
                return None
            message = to_model(Message, row)
            return message, await append_event(conn, user_id, "message.updated", message)

    async def record_sent(
        self, user_id: UUID, message_id: UUID, wamid: str
    ) -> tuple[Message, Event] | None:
        """The Graph API accepted the message as ``wamid``: record it (once) and move a
        ``pending`` message, or a ``failed`` one sent again by a re-drive, to ``sent``.
        None when a wamid is already recorded (a status webhook came first)."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""UPDATE messages SET updated_at = now(),
                        status = CASE WHEN status IN ('pending', 'failed') THEN 'sent'
                                      ELSE status END,
                        metadata = (CASE WHEN jsonb_typeof(metadata) = 'object'
                                         THEN metadata ELSE '{{}}'::jsonb END
                                    - 'whatsappError') || jsonb_build_object('wamid', $3::text)
                    WHERE user_id = $1 AND id = $2 AND metadata->>'wamid' IS NULL
                    RETURNING {MESSAGE_COLUMNS}""",
                user_id,
                message_id,
                wamid,
            )
            if row is None:
                return None
            message = to_model(Message, row)
            return message, await append_event(conn, user_id, "message.updated", message)

    async def merge_metadata(
        self, user_id: UUID, message_id: UUID, metadata: dict[str, Any]
    ) -> tuple[Message, Event] | None:
        """Merge ``metadata`` into a message's metadata (status unchanged), with an event."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""UPDATE messages SET updated_at = now(),
                        metadata = CASE WHEN jsonb_typeof(metadata) = 'object'
                                        THEN metadata ELSE '{{}}'::jsonb END || $3::jsonb
                    WHERE user_id = $1 AND id = $2 RETURNING {MESSAGE_COLUMNS}""",
                user_id,
                message_id,
                metadata,
            )
            if row is None:
                return None
            message = to_model(Message, row)
            return message, await append_event(conn, user_id, "message.updated", message)
