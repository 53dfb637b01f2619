"""Voice notes: upload (a file, a transcription, and with ``memoryId`` a voice message in
that memory), and the ``voice.transcribe`` job that decodes the audio with ffmpeg, runs
the configured recognizer and gives the voice message its transcript."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from memoryd.bridges.blobs import BlobMissing
from memoryd.bridges.speech import Audio, Recognizer, SpeechError
from memoryd.bridges.speech.audio import Undecodable, to_wav
from memoryd.errors import NotFound, UnsupportedMediaType, ValidationFailed
from memoryd.handlers import files
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.jobs import RetryLater
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Transcription
from memoryd.storage.files import FileRecord
from memoryd.storage.jobs import Job
from memoryd.storage.messages import NewMessage

log = logging.getLogger("memoryd.voice")

VOICE_KINDS = ("audio", "video")  # a voice note may come as a video file's sound track


class VoiceUpload(msgspec.Struct, rename="camel", kw_only=True):
    """The seed's ``VoiceUploadResponse``; ``messageId``: the voice message made in
    ``memoryId``'s memory, when one was given."""

    file_id: UUID
    transcription_id: UUID
    status: str
    message_id: UUID | None = None


def parse_language(value: str | None) -> str:
    """An ISO 639-1 code such as ``en`` (or ``en-US``); "" to let the engine decide."""
    value = (value or "").strip()
    if value and not (2 <= len(value) <= 16 and value.replace("-", "").isalpha()):
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "language", "message": "expected a language code such as `en`"}],
        )
    return value.lower()


async def upload(
    svc: Services,
    caller: Caller,
    staged: files.Staged,
    *,
    filename: str | None,
    language: str,
    memory_id: UUID | None,
) -> VoiceUpload:
    """Turn staged audio into a voice note; the staged blob is removed when this fails."""
    try:
        if staged.sniffed.kind not in VOICE_KINDS:
            raise UnsupportedMediaType(
                f"`audio` must be audio, not {staged.sniffed.content_type}",
                code="unsupported_file_type",
            )
        owned = memory_id is None or await svc.store.memories.get(caller.user_id, memory_id)
        if not owned:
            raise NotFound("Memory not found")
    except BaseException:
        await files.discard(svc, staged)
        raise
    # The transcription job commits with the file and transcription rows, so an upload
    # that was acknowledged (or one cut off by a crash before the message below) always
    # gets its transcription finished. The job and the message may come in either order:
    # a transcript finished before the message exists reaches it when the message claims
    # the file (`finished_transcripts`).
    record, transcription_id = await files.commit(
        svc, staged, filename, memory_id=memory_id, transcription_language=language
    )
    assert transcription_id is not None
    message_id = None
    if memory_id is not None:
        try:
            message, event = await svc.store.messages.create(
                caller.user_id,
                memory_id,
                NewMessage(
                    content="",
                    message_type="voice",
                    attachments=(record.id,),
                    # One voice message per file, even if this step is ever run again.
                    client_msg_id=f"voice:{record.id}",
                ),
                plan=svc.pipeline.server_plan(),
            )
        except BaseException:
            # Not acknowledged: the file goes, and its transcription with it (cascade).
            with contextlib.suppress(Exception):
                await svc.store.files.delete(caller.user_id, record.id)
            raise
        svc.publish(caller.user_id, event)
        message_id = message.id
    return VoiceUpload(
        file_id=record.id,
        transcription_id=transcription_id,
        status="processing",
        message_id=message_id,
    )


async def get_transcription(svc: Services, caller: Caller, transcription_id: UUID) -> Transcription:
    caller.require(Permission.READ_MEMORIES)
    found = await svc.store.files.transcription(caller.user_id, transcription_id)
    if found is None:
        raise NotFound("Transcription not found")
    return found


def _recognizer(svc: Services) -> Recognizer:
    if svc.speech is None:
        raise SpeechError("no recognizer on this node", permanent=True)
    return svc.speech


def job_handler(svc: Services) -> Any:
    async def run(job: Job) -> dict[str, Any]:
        return await transcribe(svc, job)

    return run


async def transcribe(svc: Services, job: Job) -> dict[str, Any]:
    transcription_id = UUID(job.payload["transcriptionId"])
    target = await svc.store.files.transcription_job_target(transcription_id)
    if target is None:
        return {"skipped": "the transcription or its file is gone"}
    user_id, transcription, record = target
    if transcription.status != "processing":
        return {"skipped": transcription.status}  # a retry after the result was stored
    last_try = job.attempts >= job.max_attempts
    try:
        result = await _recognize(svc, record, transcription)
    except Exception as exc:
        permanent = isinstance(exc, SpeechError) and exc.permanent
        if not (permanent or last_try):
            if isinstance(exc, SpeechError) and exc.retry_after:
                raise RetryLater(str(exc), exc.retry_after) from None
            raise
        log.warning(
            "transcription failed for good",
            extra={"transcription": str(transcription_id), "error": repr(exc)[:500]},
        )
        engine = svc.speech.name if svc.speech is not None else None
        # A recognizer's own message is meant for the user; anything else is only logged.
        why = str(exc)[:500] if isinstance(exc, SpeechError) else "internal error"
        result = {"status": "failed", "error": why, "engine": engine}
    done = await svc.store.files.finish_transcription(transcription_id, result)
    if done is not None:
        svc.publish(user_id, done[2])
    return {"status": result["status"], "engine": result.get("engine")}


async def _recognize(
    svc: Services, record: FileRecord, transcription: Transcription
) -> dict[str, Any]:
    store = files.blob_store(svc, record.storage_provider)
    with tempfile.TemporaryDirectory(prefix="memoryd-voice-") as tmp:
        original = Path(tmp) / "original"
        try:
            with original.open("wb") as out:
                async for chunk in store.open(record.storage_path):
                    out.write(chunk)
        except BlobMissing:
            return {"status": "failed", "error": "the audio file's contents are missing"}
        wav = Path(tmp) / "audio.wav"
        try:
            duration = await to_wav(original, wav)
        except Undecodable as exc:
            return {
                "status": "failed",
                "error": f"cannot decode {record.file_type}: {exc}",
                "engine": _recognizer(svc).name,
            }
        audio = Audio(
            original=original,
            content_type=record.file_type,
            wav=wav,
            duration=duration,
            language=transcription.language or None,
        )
        got = await _recognizer(svc).transcribe(audio)
    return {
        "status": "completed",
        "text": got.text,
        "confidence": round(got.confidence, 4),
        "language": got.language,
        "duration": round(duration, 3),
        "segments": [
            {
                "text": s.text,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "confidence": round(s.confidence, 4),
            }
            for s in got.segments
        ],
        "engine": got.engine,
    }
