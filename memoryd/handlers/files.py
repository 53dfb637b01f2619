"""Files: uploads streamed into the blob store, downloads, deletes, and removal of the
contents of deleted rows (the ``files.purge`` job).

An upload is two steps, so that a multipart body's fields may come in any order:
`receive` streams the bytes into the blob store (sniffing the type from the first bytes,
enforcing the kind's size limit and the quota while they flow), then `commit` inserts the
row (checking the quota again, atomically), or `discard` removes the blob.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from memoryd.bridges.blobs import BlobError, BlobStore
from memoryd.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from memoryd.handlers import thumbnails
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.file_rules import (
    INLINE_KINDS,
    SNIFF_BYTES,
    Sniffed,
    content_disposition,
    safe_filename,
    served_type,
    sniff,
)
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import FileInfo
from memoryd.storage.files import FileRecord, NewUpload, quota_exceeded
from memoryd.storage.jobs import Job

log = logging.getLogger("memoryd.files")


def blob_store(svc: Services, provider: str | None = None) -> BlobStore:
    """The store new files go to, or the one named by a row's ``storage_provider``."""
    name = provider or svc.settings.storage_backend
    store = svc.blobs.get(name)
    if store is None:
        raise BlobError(f"no blob store {name!r} on this node")
    return store


def size_limit(svc: Services, kind: str) -> int:
    s = svc.settings
    return {
        "image": s.files_max_image_bytes,
        "audio": s.files_max_audio_bytes,
        "video": s.files_max_video_bytes,
    }.get(kind, s.files_max_document_bytes)


def largest_limit(svc: Services) -> int:
    return max(size_limit(svc, k) for k in ("image", "audio", "video", "document"))


def file_too_large(limit: int, kind: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is too large: {kind} files may be up to {limit} bytes",
        code="file_too_large",
        details={"kind": kind, "maxBytes": limit},
    )


@dataclass
class Staged:
    """Bytes in the blob store that no row points to yet."""

    id: UUID
    user_id: UUID
    key: str
    provider: str
    size: int
    sha256: str
    sniffed: Sniffed


class _Guard:
    """Passes an upload's chunks on, deciding its type from the head and counting bytes."""

    def __init__(self, svc: Services, chunks: AsyncIterable[bytes], room: int) -> None:
        self.svc = svc
        self.chunks = chunks
        self.room = room  # what is left of the quota
        self.sniffed: Sniffed | None = None
        self.size = 0
        self.limit = 0

    def _decide(self, head: bytes) -> None:
        if not head:
            raise ValidationFailed(
                "The file is empty",
                code="empty_file",
                details=[{"field": "file", "message": "0 bytes"}],
            )
        found = sniff(head)
        if found is None:
            raise UnsupportedMediaType(
                "This type of file is not accepted (images, audio, video, PDF, office "
                "documents, ZIP and UTF-8 text are)",
                code="unsupported_file_type",
            )
        self.sniffed = found
        self.limit = size_limit(self.svc, found.kind)

    def _count(self, n: int) -> None:
        self.size += n
        assert self.sniffed is not None
        if self.size > self.limit:
            raise file_too_large(self.limit, self.sniffed.kind)
        if self.size > self.room:
            quota = self.svc.settings.files_quota_bytes
            raise quota_exceeded(quota - self.room, quota)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = bytearray()
        async for chunk in self.chunks:
            if self.sniffed is None:
                head += chunk
                if len(head) < SNIFF_BYTES:
                    continue
                self._decide(bytes(head))
                chunk, head = bytes(head), bytearray()
            self._count(len(chunk))
            yield chunk
        if self.sniffed is None:
            self._decide(bytes(head))
            self._count(len(head))
            yield bytes(head)


async def receive(svc: Services, caller: Caller, chunks: AsyncIterable[bytes]) -> Staged:
    """Stream an upload into the blob store; raise (leaving nothing) when it breaks a rule."""
    caller.require(Permission.WRITE_MEMORIES)
    used = await svc.store.files.usage(caller.user_id)
    quota = svc.settings.files_quota_bytes
    if used >= quota:
        raise quota_exceeded(used, quota)
    file_id = uuid.uuid4()
    key = f"files/{caller.user_id}/{file_id}"
    store = blob_store(svc)
    guard = _Guard(svc, chunks, quota - used)
    stored = await store.put_stream(key, guard)
    assert guard.sniffed is not None
    return Staged(
        file_id, caller.user_id, key, store.name, stored.size, stored.sha256, guard.sniffed
    )


async def discard(svc: Services, staged: Staged) -> None:
    with contextlib.suppress(Exception):
        await blob_store(svc, staged.provider).delete(staged.key)


async def commit(
    svc: Services,
    staged: Staged,
    filename: str | None,
    *,
    memory_id: UUID | None = None,
    transcription_language: str | None = None,
) -> tuple[FileRecord, UUID | None]:
    """The row for staged bytes (thumbnail made first for an image); the blob is removed
    when this fails. With ``transcription_language`` (a voice note) the transcription and
    its job commit with the row."""
    thumb = None
    try:
        metadata: dict[str, Any] = {}
        if staged.sniffed.kind == "image":
            thumb = await thumbnails.make(blob_store(svc, staged.provider), staged.key)
            if thumb is not None:
                metadata.update(width=thumb.width, height=thumb.height)
        name = safe_filename(filename, staged.sniffed)
        new = NewUpload(
            id=staged.id,
            user_id=staged.user_id,
            filename=f"{staged.id}{staged.sniffed.extension}",
            original_filename=name,
            file_type=staged.sniffed.content_type,
            file_size=staged.size,
            kind=staged.sniffed.kind,
            sha256=staged.sha256,
            storage_path=staged.key,
            storage_provider=staged.provider,
            memory_id=memory_id,
            metadata=metadata or None,
            thumbnail_path=thumb.key if thumb else None,
            thumbnail_type=thumb.content_type if thumb else None,
        )
        record, transcription_id = await svc.store.files.create(
            new,
            quota=svc.settings.files_quota_bytes,
            transcription_language=transcription_language,
        )
    except BaseException:
        await discard(svc, staged)
        if thumb is not None:
            with contextlib.suppress(Exception):
                await blob_store(svc, staged.provider).delete(thumb.key)
        raise
    if transcription_id is not None:
        svc.wake_jobs()
    return record, transcription_id


class _Measure:
    """Passes a bridge's media on, keeping its head (to sniff) and enforcing a size cap."""

    def __init__(self, chunks: AsyncIterable[bytes], max_bytes: int) -> None:
        self.chunks = chunks
        self.max_bytes = max_bytes
        self.head = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self.chunks:
            if len(self.head) < SNIFF_BYTES:
                self.head += chunk[: SNIFF_BYTES - len(self.head)]
            size += len(chunk)
            if size > self.max_bytes:
                raise file_too_large(self.max_bytes, "media")
            yield chunk


async def store_media(
    svc: Services,
    user_id: UUID,
    file_id: UUID,
    chunks: AsyncIterable[bytes],
    *,
    original_filename: str | None,
    memory_id: UUID | None = None,
    message_id: UUID | None = None,
    metadata: dict[str, Any] | None = None,
    max_bytes: int | None = None,
    message_metadata: dict[str, Any] | None = None,
) -> FileRecord:
    """Store a bridge's media (a WhatsApp download) like an upload, idempotently.

    ``file_id`` should be deterministic (``uuid5`` of the user and the WhatsApp message
    id): a retry rewrites the same blob and finds the row it stored. The type is sniffed
    (an unknown one is kept as ``application/octet-stream``, served as an attachment);
    images get a thumbnail; audio is transcribed by the ``voice.transcribe`` job, and
    when ``message_id`` is given the file is attached to that message, which then gets
    the transcript as its content, and ``message_metadata`` merged into its metadata
    (``mediaStatus: stored``), in the same transaction. Publishes the message's
    ``message.updated``.

    An exception from ``chunks`` (a size cap, a broken download, a checksum that does not
    match) leaves nothing stored: the blob store discards what it got."""
    store = blob_store(svc)
    key = f"files/{user_id}/{file_id}"
    measured = _Measure(chunks, max_bytes or largest_limit(svc))
    stored = await store.put_stream(key, measured)
    sniffed = sniff(measured.head) or Sniffed("application/octet-stream", "document", "")
    extra = dict(metadata or {})
    thumb = None
    if sniffed.kind == "image":
        thumb = await thumbnails.make(store, key)
        if thumb is not None:
            extra.update(width=thumb.width, height=thumb.height)
    new = NewUpload(
        id=file_id,
        user_id=user_id,
        filename=f"{file_id}{sniffed.extension}",
        original_filename=safe_filename(original_filename, sniffed, fallback="media"),
        file_type=sniffed.content_type,
        file_size=stored.size,
        kind=sniffed.kind,
        sha256=stored.sha256,
        storage_path=key,
        storage_provider=store.name,
        memory_id=memory_id,
        metadata=extra or None,
        thumbnail_path=thumb.key if thumb else None,
        thumbnail_type=thumb.content_type if thumb else None,
    )
    try:
        record, event, created = await svc.store.files.add_media(
            new,
            message_id=message_id,
            transcribe=sniffed.kind == "audio",
            message_metadata=message_metadata,
        )
    except (ValidationFailed, Conflict):  # the message is gone: no row will hold the blob
        for orphan in (key, thumb.key if thumb else None):
            if orphan:
                with contextlib.suppress(Exception):
                    await store.delete(orphan)
        raise
    svc.publish(user_id, event)
    if created and sniffed.kind == "audio":
        svc.wake_jobs()
    return record


async def upload(
    svc: Services, caller: Caller, chunks: AsyncIterable[bytes], filename: str | None
) -> FileInfo:
    staged = await receive(svc, caller, chunks)
    record, _ = await commit(svc, staged, filename)
    return record.info()


async def get_file(svc: Services, caller: Caller, file_id: UUID) -> FileRecord:
    """The caller's file; another user's reads exactly like a missing one (404)."""
    caller.require(Permission.READ_MEMORIES)
    found = await svc.store.files.get(caller.user_id, file_id)
    if found is None:
        raise NotFound("File not found")
    return found


async def delete_file(svc: Services, caller: Caller, file_id: UUID) -> None:
    caller.require(Permission.WRITE_MEMORIES)  # one's own upload, like editing a message
    if not await svc.store.files.delete(caller.user_id, file_id):
        raise NotFound("File not found")
    svc.wake_jobs()  # the purge job the delete enqueued


@dataclass(frozen=True)
class Download:
    """How to answer a download: the blob and the headers that make it safe."""

    store: BlobStore
    key: str
    size: int
    content_type: str
    disposition: str
    etag: str


def download(
    record: FileRecord, store: BlobStore, *, thumbnail: bool, attachment: bool
) -> Download:
    if thumbnail:
        if not record.thumbnail_path:
            raise NotFound("This file has no thumbnail")
        # A thumbnail's size is not stored; it is small and served whole.
        return Download(
            store,
            record.thumbnail_path,
            -1,
            record.thumbnail_type or "image/jpeg",
            content_disposition(f"thumbnail-{record.original_filename}.jpg", inline=True),
            f'"{record.sha256 or record.id}-thumb"',
        )
    content_type, may_inline = served_type(record.file_type)
    inline = may_inline and record.kind in INLINE_KINDS and not attachment
    return Download(
        store,
        record.storage_path,
        record.file_size,
        content_type,
        content_disposition(record.original_filename, inline=inline),
        f'"{record.sha256 or record.id}"',
    )


def purge_handler(svc: Services) -> Any:
    """The ``files.purge`` job: remove a deleted row's blobs (idempotent)."""

    async def run(job: Job) -> dict[str, Any]:
        store = blob_store(svc, job.payload.get("provider") or "local")
        keys = [k for k in job.payload.get("keys") or [] if k]
        for key in keys:
            await store.delete(key)
        return {"deleted": len(keys)}

    return run
