"""Files (uploads, voice notes, WhatsApp media) and transcriptions of voice notes.

A row's contents live in a blob store under ``storage_path``; deleting a row (however it
goes) enqueues a ``files.purge`` job in the same transaction (a trigger, 0006_files.sql).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from memoryd.errors import Conflict, PayloadTooLarge, ValidationFailed
from memoryd.protocol.models import Event, FileInfo, Message, Transcription, TranscriptSegment
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.jobs import NewJob, enqueue
from memoryd.storage.rows import MESSAGE_COLUMNS, to_model

PURGE = "files.purge"
TRANSCRIBE = "voice.transcribe"

FILE_COLUMNS = """id, user_id, memory_id, message_id, filename, original_filename, file_type,
    file_size, kind, sha256, storage_path, storage_provider, thumbnail_path, thumbnail_type,
    metadata, created_at"""

TRANSCRIPTION_COLUMNS = """id, file_id, memory_id, message_id, COALESCE(text, '') AS text,
    COALESCE(confidence, 0) AS confidence, COALESCE(language, '') AS language,
    COALESCE(duration, 0) AS duration, status, COALESCE(segments, '[]') AS segments, engine,
    error, created_at, updated_at"""


@dataclass(frozen=True)
class FileRecord:
    """A files row, with where its contents are (never sent to a client as such)."""

    id: UUID
    user_id: UUID
    memory_id: UUID | None
    message_id: UUID | None
    filename: str
    original_filename: str
    file_type: str
    file_size: int
    kind: str
    sha256: str | None
    storage_path: str
    storage_provider: str
    thumbnail_path: str | None
    thumbnail_type: str | None
    metadata: Any
    created_at: Any

    def info(self) -> FileInfo:
        return FileInfo(
            id=self.id,
            memory_id=self.memory_id,
            message_id=self.message_id,
            filename=self.filename,
            original_filename=self.original_filename,
            file_type=self.file_type,
            file_size=self.file_size,
            kind=self.kind,
            sha256=self.sha256,
            url=f"/api/files/{self.id}/content",
            thumbnail_url=f"/api/files/{self.id}/thumbnail" if self.thumbnail_path else None,
            metadata=self.metadata,
            created_at=self.created_at,
        )


def _record(row: asyncpg.Record) -> FileRecord:
    return FileRecord(**dict(row.items()))


@dataclass(frozen=True)
class NewUpload:
    id: UUID
    user_id: UUID
    filename: str
    original_filename: str
    file_type: str
    file_size: int
    kind: str
    sha256: str
    storage_path: str
    storage_provider: str
    memory_id: UUID | None = None
    metadata: Any = None
    thumbnail_path: str | None = None
    thumbnail_type: str | None = None


def transcribe_job(transcription_id: UUID, user_id: UUID) -> NewJob:
    return NewJob(
        kind=TRANSCRIBE,
        payload={"transcriptionId": str(transcription_id)},
        user_id=user_id,
        dedupe_key=str(transcription_id),
        max_attempts=5,
    )


def quota_exceeded(used: int, quota: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "Storage quota exceeded",
        code="quota_exceeded",
        details={"usedBytes": used, "quotaBytes": quota},
    )


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def usage(self, user_id: UUID) -> int:
        """Bytes the user's files take (originals; thumbnails are not counted)."""
        used = await self.db.fetchval(
            "SELECT COALESCE(sum(file_size), 0) FROM files WHERE user_id = $1", user_id
        )
        return int(used)

    async def create(
        self,
        new: NewUpload,
        *,
        quota: int,
        transcription_language: str | None = None,
    ) -> tuple[FileRecord, UUID | None]:
        """Insert an uploaded file, within the user's ``quota`` (bytes), else raise.

        With ``transcription_language`` (a voice note; "" for "detect") a transcription
        row is added too, and its job, in the same transaction: no voice note is ever
        stored without the job that finishes its transcription. Returns the file and the
        transcription's id."""
        async with self.db.transaction() as conn:
            # One upload of a user at a time passes this point: the sum and the insert
            # are one step, so concurrent uploads cannot overshoot the quota together.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('files:' || $1::text))", str(new.user_id)
            )
            used = int(
                await conn.fetchval(
                    "SELECT COALESCE(sum(file_size), 0) FROM files WHERE user_id = $1",
                    new.user_id,
                )
            )
            if used + new.file_size > quota:
                raise quota_exceeded(used, quota)
            row = await conn.fetchrow(
                f"""INSERT INTO files (id, user_id, memory_id, filename, original_filename,
                        file_type, file_size, kind, sha256, storage_path, storage_provider,
                        metadata, thumbnail_path, thumbnail_type, is_processed)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, TRUE)
                    RETURNING {FILE_COLUMNS}""",
                new.id, new.user_id, new.memory_id, new.filename, new.original_filename,
                new.file_type, new.file_size, new.kind, new.sha256, new.storage_path,
                new.storage_provider, new.metadata, new.thumbnail_path, new.thumbnail_type,
            )  # fmt: skip
            transcription_id = None
            if transcription_language is not None:
                transcription_id = await conn.fetchval(
                    """INSERT INTO transcriptions (user_id, file_id, memory_id, language)
                       VALUES ($1, $2, $3, $4) RETURNING id""",
                    new.user_id,
                    new.id,
                    new.memory_id,
                    transcription_language or None,
                )
                await enqueue(conn, transcribe_job(transcription_id, new.user_id))
            return _record(row), transcription_id

    async def add_media(
        self,
        new: NewUpload,
        *,
        message_id: UUID | None = None,
        transcribe: bool = False,
        message_metadata: dict[str, Any] | None = None,
    ) -> tuple[FileRecord, Event | None, bool]:
        """A bridge's media (WhatsApp): ``(file, event, created)``, in one transaction.

        Stored once per id: a retry with the same id changes nothing and returns the row
        it stored (``created`` False). Not counted against the quota (the user did not
        choose to upload it). With ``message_id`` the file is attached to that message of
        the user (its ``attachments`` gain the id, ``message_metadata`` is merged into its
        metadata and an earlier ``mediaError`` dropped; ``event`` is its
        ``message.updated``); with ``transcribe`` a transcription and its job are added."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""INSERT INTO files (id, user_id, memory_id, message_id, filename,
                        original_filename, file_type, file_size, kind, sha256, storage_path,
                        storage_provider, metadata, thumbnail_path, thumbnail_type,
                        is_processed)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        TRUE)
                    ON CONFLICT (id) DO NOTHING
                    RETURNING {FILE_COLUMNS}""",
                new.id, new.user_id, new.memory_id, message_id, new.filename,
                new.original_filename, new.file_type, new.file_size, new.kind, new.sha256,
                new.storage_path, new.storage_provider, new.metadata, new.thumbnail_path,
                new.thumbnail_type,
            )  # fmt: skip
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {FILE_COLUMNS} FROM files WHERE user_id = $1 AND id = $2",
                    new.user_id,
                    new.id,
                )
                if existing is None:
                    raise Conflict("That file id belongs to another user")
                return _record(existing), None, False
            event = None
            if message_id is not None:
                msg_row = await conn.fetchrow(
                    f"""UPDATE messages SET attachments =
                            COALESCE(attachments, '[]'::jsonb) || jsonb_build_array($3::text),
                            metadata = CASE WHEN $4::jsonb IS NULL THEN metadata
                                ELSE (CASE WHEN jsonb_typeof(metadata) = 'object'
                                           THEN metadata ELSE '{{}}'::jsonb END
                                      - 'mediaError') || $4::jsonb END,
                            updated_at = now()
                        WHERE user_id = $1 AND id = $2 RETURNING {MESSAGE_COLUMNS}""",
                    new.user_id,
                    message_id,
                    str(new.id),
                    message_metadata,
                )
                if msg_row is None:
                    raise ValidationFailed(
                        "Validation failed",
                        details=[{"field": "messageId", "message": "no such message"}],
                    )
                message = await with_files(conn, new.user_id, to_model(Message, msg_row))
                event = await append_event(conn, new.user_id, "message.updated", message)
            if transcribe:
                transcription_id = await conn.fetchval(
                    """INSERT INTO transcriptions (user_id, file_id, memory_id, message_id)
                       VALUES ($1, $2, $3, $4) RETURNING id""",
                    new.user_id,
                    new.id,
                    new.memory_id,
                    message_id,
                )
                await enqueue(conn, transcribe_job(transcription_id, new.user_id))
            return _record(row), event, True

    async def get(self, user_id: UUID, file_id: UUID) -> FileRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {FILE_COLUMNS} FROM files WHERE user_id = $1 AND id = $2", user_id, file_id
        )
        return _record(row) if row else None

    async def delete(self, user_id: UUID, file_id: UUID) -> bool:
        """Delete an unattached file; Conflict when a message holds it (delete that)."""
        async with self.db.transaction() as conn:
            message_id = await conn.fetchval(
                "SELECT message_id FROM files WHERE user_id = $1 AND id = $2 FOR UPDATE",
                user_id,
                file_id,
            )
            if message_id is not None:
                raise Conflict(
                    "The file is attached to a message; delete the message instead",
                    code="file_attached",
                    details={"messageId": str(message_id)},
                )
            done = await conn.execute(
                "DELETE FROM files WHERE user_id = $1 AND id = $2", user_id, file_id
            )
            return bool(done != "DELETE 0")

    # -- transcriptions ------------------------------------------------------------------

    async def transcription(self, user_id: UUID, transcription_id: UUID) -> Transcription | None:
        row = await self.db.fetchrow(
            f"SELECT {TRANSCRIPTION_COLUMNS} FROM transcriptions WHERE user_id = $1 AND id = $2",
            user_id,
            transcription_id,
        )
        return _transcription(row) if row else None

    async def transcription_job_target(
        self, transcription_id: UUID
    ) -> tuple[UUID, Transcription, FileRecord] | None:
        """``(user id, transcription, file)`` for the job, or None when either is gone."""
        row = await self.db.fetchrow(
            f"SELECT user_id, {TRANSCRIPTION_COLUMNS} FROM transcriptions WHERE id = $1",
            transcription_id,
        )
        if row is None:
            return None
        fields = dict(row.items())
        user_id = fields.pop("user_id")
        found = await self.get(user_id, fields["file_id"])
        if found is None:
            return None
        return user_id, _transcription(fields), found

    async def finish_transcription(
        self, transcription_id: UUID, result: dict[str, Any]
    ) -> tuple[Transcription, Message | None, Event | None] | None:
        """Store a transcription's outcome (``status`` completed or failed, and ``text``,
        ``confidence``, ``language``, ``duration``, ``segments``, ``engine``, ``error``).

        A completed one also becomes the content of the voice message holding the file,
        when there is one, with a ``message.updated`` event, in the same transaction: the
        file row is locked first, so a send attaching it at the same time is ordered
        before or after, never lost between."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                f"""UPDATE transcriptions SET status = $2, text = $3, confidence = $4,
                        language = COALESCE($5, language), duration = $6, segments = $7,
                        engine = $8, error = $9, updated_at = now()
                    WHERE id = $1 RETURNING user_id, {TRANSCRIPTION_COLUMNS}""",
                transcription_id, result["status"], result.get("text"),
                result.get("confidence"), result.get("language") or None,
                result.get("duration"), result.get("segments"), result.get("engine"),
                result.get("error"),
            )  # fmt: skip
            if row is None:
                return None
            fields = dict(row.items())
            user_id = fields.pop("user_id")
            done = _transcription(fields)
            message_id = await conn.fetchval(
                "SELECT message_id FROM files WHERE id = $1 FOR UPDATE", done.file_id
            )
            if message_id is None:
                return done, None, None
            await conn.execute(
                "UPDATE transcriptions SET message_id = $2 WHERE id = $1",
                transcription_id,
                message_id,
            )
            done = msgspec.structs.replace(done, message_id=message_id)
            message = await _give_transcript(conn, user_id, message_id, done)
            if message is None:
                return done, None, None
            return done, message, await append_event(conn, user_id, "message.updated", message)


async def _give_transcript(
    conn: asyncpg.Connection, user_id: UUID, message_id: UUID, done: Transcription
) -> Message | None:
    """Put a finished transcription on the message holding its file: always in
    ``metadata.transcription``; as the content when that is empty or a placeholder
    ("[voice message]" from WhatsApp), never over words someone wrote."""
    note = {
        "id": str(done.id),
        "status": done.status,
        "engine": done.engine,
        "language": done.language,
        "duration": done.duration,
        "confidence": done.confidence,
        "error": done.error,
        "text": done.text,
    }
    text = done.text if done.status == "completed" else None
    row = await conn.fetchrow(
        f"""UPDATE messages SET content = CASE
                    WHEN $3::text IS NOT NULL AND (content = '' OR content ~ '^\\[[a-z ]+\\]$')
                    THEN $3 ELSE content END,
                metadata = COALESCE(metadata, '{{}}'::jsonb)
                    || jsonb_build_object('transcription', $4::jsonb),
                updated_at = now()
            WHERE user_id = $1 AND id = $2 RETURNING {MESSAGE_COLUMNS}""",
        user_id,
        message_id,
        text,
        note,
    )
    if row is None:
        return None
    return await with_files(conn, user_id, to_model(Message, row))


async def finished_transcripts(conn: asyncpg.Connection, message: Message) -> Message:
    """A send that attaches a voice note transcribed before it: the message gets the
    transcript now (the job found no message to give it to). Called after
    `claim_attachments`, whose row locks order it against the job's `finish_transcription`
    (which locks the file row too): one of the two always sees the other."""
    rows = await conn.fetch(
        f"""SELECT {TRANSCRIPTION_COLUMNS} FROM transcriptions
            WHERE user_id = $1 AND file_id = ANY($2::uuid[]) AND status <> 'processing'
            ORDER BY updated_at DESC LIMIT 1""",
        message.user_id,
        [f.id for f in message.files],
    )
    if not rows:
        return message
    done = msgspec.structs.replace(_transcription(rows[0]), message_id=message.id)
    await conn.execute(
        "UPDATE transcriptions SET message_id = $2 WHERE id = $1", done.id, message.id
    )
    return await _give_transcript(conn, message.user_id, message.id, done) or message


def _transcription(row: asyncpg.Record | dict[str, Any]) -> Transcription:
    fields = dict(row.items())
    fields["segments"] = msgspec.convert(fields["segments"] or [], list[TranscriptSegment])
    return Transcription(**fields)


# -- attachments (called by MessageStore inside a send's or an edit's transaction) ----------


async def claim_attachments(
    conn: asyncpg.Connection,
    user_id: UUID,
    memory_id: UUID,
    message_id: UUID,
    file_ids: Sequence[UUID],
) -> list[FileInfo]:
    """Attach the user's unattached files to a new message, or raise naming `attachments`.

    Another user's file, an unknown id and a file already attached elsewhere all read
    the same ("not an unattached file of yours"): nothing tells one from the other."""
    wanted = list(dict.fromkeys(file_ids))
    if len(wanted) != len(file_ids):
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "attachments", "message": "a file may be attached once"}],
        )
    rows = await conn.fetch(
        f"""UPDATE files SET message_id = $3, memory_id = $4
            WHERE user_id = $1 AND id = ANY($2::uuid[]) AND message_id IS NULL
            RETURNING {FILE_COLUMNS}""",
        user_id,
        wanted,
        message_id,
        memory_id,
    )
    if len(rows) != len(wanted):
        claimed = {r["id"] for r in rows}
        raise ValidationFailed(
            "Validation failed",
            details=[
                {
                    "field": f"attachments[{i}]",
                    "message": "not an unattached file of yours",
                }
                for i, file_id in enumerate(file_ids)
                if file_id not in claimed
            ],
        )
    by_id = {r["id"]: _record(r).info() for r in rows}
    return [by_id[f] for f in wanted]


async def with_files(
    conn: asyncpg.Connection | Database, user_id: UUID, message: Message
) -> Message:
    """``message`` with ``files`` filled from its attachments."""
    if not message.attachments:
        return message
    filled = await files_of(conn, user_id, [message])
    return filled[0]


async def files_of(
    conn: asyncpg.Connection | Database, user_id: UUID, messages: list[Message]
) -> list[Message]:
    """``messages`` with ``files`` filled (one query for the lot)."""
    ids = [m.id for m in messages if m.attachments]
    if not ids:
        return messages
    rows = await conn.fetch(
        f"SELECT {FILE_COLUMNS} FROM files WHERE user_id = $1 AND message_id = ANY($2::uuid[])",
        user_id,
        ids,
    )
    by_message: dict[UUID, dict[str, FileInfo]] = {}
    for r in rows:
        by_message.setdefault(r["message_id"], {})[str(r["id"])] = _record(r).info()
    out = []
    for m in messages:
        found = by_message.get(m.id)
        if found:
            files = [found[a] for a in m.attachments if a in found]
            m = msgspec.structs.replace(m, files=files)
        out.append(m)
    return out
