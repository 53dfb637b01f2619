"""/api/files and /api/voice: multipart uploads streamed to the blob store, downloads
with Range and ETag, voice notes and their transcriptions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, MultipartReader, web

from memoryd.bridges.blobs import BlobError, BlobMissing
from memoryd.errors import NotFound, UnsupportedMediaType, ValidationFailed
from memoryd.handlers import files, voice
from memoryd.handlers.context import Caller
from memoryd.handlers.fields import parse_id
from memoryd.handlers.file_rules import parse_range
from memoryd.handlers.rbac import Permission
from memoryd.handlers.voice import VoiceUpload
from memoryd.protocol.models import Transcription
from memoryd.protocol.responses import FileResponse
from memoryd.server.http import apply_limit, caller, json_response, services
from memoryd.server.operations import Op, Routes

log = logging.getLogger("memoryd.files")

routes = Routes(tag="Files")

_BINARY = {"type": "string", "format": "binary"}


def _form(*fields: tuple[str, str, bool]) -> dict[str, Any]:
    """The multipart/form-data schema of an upload: (name, description, is the file)."""
    return {
        "type": "object",
        "required": [name for name, _, is_file in fields if is_file],
        "properties": {
            name: {"type": "string", "description": text}
            | ({"contentEncoding": "binary"} if is_file else {})
            for name, text, is_file in fields
        },
    }


_CHUNK = 256 * 1024
_FIELD_BYTES = 1024  # the longest text field of an upload form we read
_SAFETY = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, no-cache",
}


def _bad_multipart(message: str = "The multipart body is malformed or was cut off") -> Exception:
    return ValidationFailed(message, code="bad_multipart")


async def _upload_caller(request: web.Request) -> Caller:
    who = await caller(request)
    await apply_limit(request, "upload", str(who.user_id))
    return who


async def _reader(request: web.Request) -> MultipartReader:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type must be multipart/form-data, not {request.content_type or 'none'}"
        )
    limit = files.largest_limit(services(request)) + 64 * 1024  # a form's own bytes
    if request.content_length is not None and request.content_length > limit:
        raise files.file_too_large(limit, "any")
    try:
        return await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise _bad_multipart(f"Malformed multipart body: {exc}") from None


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    try:
        part = await reader.next()
    except (ValueError, AssertionError, aiohttp.ClientError, ConnectionError) as exc:
        raise _bad_multipart(f"Malformed multipart body: {exc}") from None
    if part is not None and not isinstance(part, BodyPartReader):
        raise _bad_multipart("Nested multipart bodies are not accepted")
    return part


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """A file part's bytes as they arrive; a body cut short is a 400, never a file."""
    try:
        while chunk := await part.read_chunk(_CHUNK):
            yield chunk
    except (ValueError, AssertionError, aiohttp.ClientError, ConnectionError):
        raise _bad_multipart() from None


async def _text(part: BodyPartReader) -> str:
    data = bytearray()
    async for chunk in _chunks(part):
        data += chunk
        if len(data) > _FIELD_BYTES:
            raise ValidationFailed(
                "Validation failed",
                details=[{"field": part.name, "message": f"longer than {_FIELD_BYTES} bytes"}],
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(
            "Validation failed", details=[{"field": part.name, "message": "not UTF-8"}]
        ) from None


def _missing(field: str) -> ValidationFailed:
    return ValidationFailed(
        "Validation failed", details=[{"field": field, "message": "a file part is required"}]
    )


async def _drain(reader: MultipartReader) -> dict[str, str]:
    """The text fields after the file (the file's own part is read)."""
    fields: dict[str, str] = {}
    while (part := await _next_part(reader)) is not None:
        if part.filename is None and part.name:
            fields[part.name] = await _text(part)
        else:
            await part.release()
    return fields


# -- files ----------------------------------------------------------------------------------


@routes.post(
    "/api/files",
    Op(
        "uploadFile",
        "Upload a file",
        response=FileResponse,
        status=201,
        body=_form(("file", "The file (any filename; its type is sniffed from the bytes).", True)),
        body_media=("multipart/form-data",),
        permission=Permission.WRITE_MEMORIES,
        notes="Streamed to the blob store (local directory or S3), never held whole in "
        "memory. The type is sniffed from the first bytes, not taken from the client: "
        "images (JPEG, PNG, GIF, WebP, HEIC), audio (Ogg, WebM, MP3, WAV, FLAC, M4A, AAC, AMR), "
        "video (WebM, MP4, QuickTime, 3GP), PDF, office documents, ZIP and UTF-8 text "
        "(stored as `text/plain` whatever markup it holds); anything else is 415 "
        "`unsupported_file_type`. 400 `empty_file` for 0 bytes, `bad_multipart` for a body "
        "cut off; 413 `file_too_large` past the kind's limit (MEMORYD_FILES_MAX_*_BYTES), "
        "`quota_exceeded` past MEMORYD_FILES_QUOTA_BYTES. The filename is sanitised (no "
        "path, no control or reserved characters, the sniffed type's extension). Images get "
        "a thumbnail and `metadata.width`/`height`. Counts against the `upload` limit "
        "(MEMORYD_RATE_LIMIT_UPLOAD, 10/hour). Attach the returned id to a message with "
        "`attachments`.",
    ),
)
async def upload_file(request: web.Request) -> web.Response:
    who = await _upload_caller(request)
    svc = services(request)
    reader = await _reader(request)
    while (part := await _next_part(reader)) is not None:
        if part.name == "file":
            break
        await part.release()
    else:
        raise _missing("file")
    staged = await files.receive(svc, who, _chunks(part))
    try:
        await _drain(reader)
    except BaseException:
        await files.discard(svc, staged)
        raise
    record, _ = await files.commit(svc, staged, part.filename)
    return json_response(FileResponse(file=record.info()), status=201)


@routes.get(
    "/api/files/{id}",
    Op(
        "getFile",
        "A file's metadata",
        response=FileResponse,
        permission=Permission.READ_MEMORIES,
    ),
)
async def get_file(request: web.Request) -> web.Response:
    who = await caller(request)
    file_id = parse_id(request.match_info["id"], "File")
    record = await files.get_file(services(request), who, file_id)
    return json_response(FileResponse(file=record.info()))


@routes.delete(
    "/api/files/{id}",
    Op(
        "deleteFile",
        "Delete an unattached file",
        status=204,
        permission=Permission.WRITE_MEMORIES,
        errors=(409,),
        notes="409 `file_attached` when a message holds it: delete the message (its files "
        "go with it). The contents are removed from the blob store by a durable job.",
    ),
)
async def delete_file(request: web.Request) -> web.Response:
    who = await caller(request)
    await files.delete_file(services(request), who, parse_id(request.match_info["id"], "File"))
    return web.Response(status=204)


@routes.get(
    "/api/files/{id}/content",
    Op(
        "downloadFile",
        "Download a file",
        response=_BINARY,
        media="application/octet-stream",
        permission=Permission.READ_MEMORIES,
        errors=(416,),
        also=(
            (206, "Partial content: the `Range` asked for (one range)", _BINARY),
            (304, "Not modified: `If-None-Match` matches the `ETag`", None),
            (307, "A presigned URL of the S3 bucket (MEMORYD_S3_PRESIGN_SECONDS > 0)", None),
        ),
        notes="`Content-Type` is the sniffed type; `ETag` is the SHA-256 of the content; "
        "`Range: bytes=a-b` (one range, `If-Range` honoured) answers 206. Images, audio and "
        "video are `inline`, everything else (and anything with `?download=1`) an "
        "`attachment`; `filename*` carries the UTF-8 name. Always `X-Content-Type-Options: "
        "nosniff` and `Content-Security-Policy: sandbox`: nothing is ever rendered as HTML.",
    ),
)
async def file_content(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=False)


@routes.get(
    "/api/files/{id}/thumbnail",
    Op(
        "fileThumbnail",
        "An image's thumbnail",
        response=_BINARY,
        media="image/jpeg",
        permission=Permission.READ_MEMORIES,
        notes="A JPEG at most 320 px on its longer side; 404 when the file has none (not "
        "an image).",
    ),
)
async def file_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _serve(request, thumbnail=True)


async def _serve(request: web.Request, *, thumbnail: bool) -> web.StreamResponse:
    who = await caller(request)
    svc = services(request)
    record = await files.get_file(svc, who, parse_id(request.match_info["id"], "File"))
    store = files.blob_store(svc, record.storage_provider)
    attachment = request.query.get("download", "") in ("1", "true")
    plan = files.download(record, store, thumbnail=thumbnail, attachment=attachment)
    headers = {
        **_SAFETY,
        "Content-Type": plan.content_type,
        "Content-Disposition": plan.disposition,
        "ETag": plan.etag,
    }
    presign = svc.settings.s3_presign_seconds
    if presign > 0:
        url = await store.presigned_url(
            plan.key,
            filename=record.original_filename,
            content_type=plan.content_type,
            disposition=plan.disposition,
            expires=presign,
        )
        if url is not None:
            return web.Response(status=307, headers={"Location": url, "Cache-Control": "no-store"})
    if plan.etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers={"ETag": plan.etag, **_SAFETY})
    status, start, end = 200, 0, None
    if plan.size >= 0:
        headers["Accept-Ranges"] = "bytes"
        if_range = request.headers.get("If-Range")
        wanted = parse_range(request.headers.get("Range"), plan.size)
        if if_range is not None and if_range != plan.etag:
            wanted = None  # changed since the client's first part: send it all
        if wanted is False:
            return web.json_response(
                {"error": {"code": "range_not_satisfiable", "message": "Range not satisfiable",
                           "details": {"size": plan.size}}},
                status=416,
                headers={"Content-Range": f"bytes */{plan.size}"},
            )  # fmt: skip
        if isinstance(wanted, tuple):
            status, (start, end) = 206, wanted
            headers["Content-Range"] = f"bytes {start}-{end}/{plan.size}"
        length = (end if end is not None else plan.size - 1) - start + 1
        headers["Content-Length"] = str(length)
    chunks = store.open(plan.key, start, end).__aiter__()
    try:
        first = await anext(chunks, b"")
    except BlobMissing:
        log.error("file contents missing", extra={"file": str(record.id), "key": plan.key})
        raise NotFound("The file's contents are missing") from None
    except BlobError:
        log.exception("file contents unreadable", extra={"file": str(record.id)})
        raise
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except (ConnectionError, aiohttp.ClientError):
        pass  # the client went away
    except Exception:  # headers are sent: all that is left is to cut the connection
        log.exception("download failed mid-way", extra={"file": str(record.id)})
        if request.transport is not None:
            request.transport.close()
    return response


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {t.strip().removeprefix("W/") for t in header.split(",")}


# -- voice ----------------------------------------------------------------------------------


@routes.post(
    "/api/voice/upload",
    Op(
        "uploadVoice",
        "Upload a voice note",
        response=VoiceUpload,
        status=201,
        body=_form(
            (
                "audio",
                "The recording: Opus in Ogg (WhatsApp), Opus in WebM (browsers), "
                "MP3, M4A, WAV, FLAC ...",
                True,
            ),
            ("language", "Optional ISO 639-1 code such as `en`.", False),
            ("memoryId", "Optional: make a `voice` message with it in this memory.", False),
        ),
        body_media=("multipart/form-data",),
        permission=Permission.WRITE_MEMORIES,
        tag="Voice",
        notes="Stored like `POST /api/files` (the audio limit applies), then transcribed by "
        "a durable job. With `memoryId` a `voice` message holding the file is created at "
        "once (`messageId`); when the transcript is ready it becomes the message's content "
        "(a `message.updated` event, `metadata.transcription` naming the engine). Poll "
        "`GET /api/voice/transcription/{id}`. Fields may come before or after `audio`. "
        "Counts against the `upload` limit (MEMORYD_RATE_LIMIT_UPLOAD, 10/hour).",
    ),
)
async def voice_upload(request: web.Request) -> web.Response:
    who = await _upload_caller(request)
    svc = services(request)
    reader = await _reader(request)
    fields: dict[str, str] = {}
    staged = None
    filename = None
    try:
        while (part := await _next_part(reader)) is not None:
            if part.name == "audio" and staged is None:
                filename = part.filename
                staged = await files.receive(svc, who, _chunks(part))
            elif part.filename is None and part.name:
                fields[part.name] = await _text(part)
            else:
                await part.release()
        if staged is None:
            raise _missing("audio")
        language = voice.parse_language(fields.get("language"))
        memory_id: Any = None
        if fields.get("memoryId"):
            memory_id = parse_id(fields["memoryId"], "Memory")
    except BaseException:
        if staged is not None:
            await files.discard(svc, staged)
        raise
    result = await voice.upload(
        svc, who, staged, filename=filename, language=language, memory_id=memory_id
    )
    return json_response(result, status=201)


@routes.get(
    "/api/voice/transcription/{id}",
    Op(
        "getTranscription",
        "A transcription",
        response=Transcription,
        permission=Permission.READ_MEMORIES,
        tag="Voice",
        notes="`status` is `processing`, `completed` or `failed` (`error` says why, e.g. a "
        "format ffmpeg cannot decode). `engine` names the recognizer (`pocketsphinx-...` "
        "offline by default, `openai whisper-1`, `faster-whisper-... tiny.en`). `duration` "
        "is measured from the decoded audio, in seconds; `confidence` 0..1.",
    ),
)
async def get_transcription(request: web.Request) -> web.Response:
    who = await caller(request)
    found = await voice.get_transcription(
        services(request), who, parse_id(request.match_info["id"], "Transcription")
    )
    return json_response(found)
