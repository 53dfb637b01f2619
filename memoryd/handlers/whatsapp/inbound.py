"""Inbound WhatsApp items, as durable jobs: a message becomes a message of the contact's
thread (created with the contact the first time), stored and delivered at once; its media
follows as a ``whatsapp.media`` job. A status moves a sent message forward only. The
message's ``clientMsgId`` (``wa:<wamid>``) makes a retried delivery store one message."""

from __future__ import annotations

import hashlib
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from memoryd.bridges.blobs import BlobError
from memoryd.bridges.whatsapp import GraphError, WhatsAppBridge
from memoryd.errors import ValidationFailed
from memoryd.handlers.context import Services
from memoryd.handlers.files import store_media
from memoryd.handlers.jobs import PermanentFailure, RetryLater
from memoryd.handlers.whatsapp.shared import (
    CATEGORY,
    MEDIA,
    as_dict,
    as_list,
    bridge_of,
    decrypt,
    dedupe_key,
    log,
    retry_delay,
)
from memoryd.protocol.models import Message
from memoryd.storage.jobs import Job, NewJob
from memoryd.storage.messages import JobFactory, NewMessage, SendContext, SendPlan
from memoryd.storage.whatsapp import FORWARD_FROM

_UNKNOWN_STATUS_ATTEMPTS = 5  # a status for a wamid we never sent: wait a little, then drop
_MEDIA_TYPES = {  # webhook type -> (messageType, placeholder)
    "image": ("image", "[image]"),
    "sticker": ("image", "[sticker]"),
    "audio": ("voice", "[audio]"),
    "voice": ("voice", "[voice message]"),
    "video": ("document", "[video]"),
    "document": ("document", "[document]"),
}


def _client_msg_id(wamid: str) -> str:
    cid = f"wa:{wamid}"
    return cid if len(cid) <= 100 else f"wa:{hashlib.sha256(wamid.encode()).hexdigest()}"


def _render(message: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None, bool]:
    """``(content, messageType, media object or None, keep the raw payload)``."""
    kind = str(message.get("type") or "unknown")
    body = as_dict(message.get(kind))
    if kind == "text":
        return str(body.get("body") or "") or "[text]", "text", None, False
    if kind in _MEDIA_TYPES:
        message_type, placeholder = _MEDIA_TYPES[kind]
        if kind == "audio" and body.get("voice"):
            placeholder = "[voice message]"
        text = body.get("caption") or body.get("filename") or placeholder
        return str(text), message_type, body or None, False
    if kind == "location":
        where = " ".join(str(body[k]) for k in ("name", "address") if body.get(k))
        text = f"[location] {where} ({body.get('latitude')}, {body.get('longitude')})".strip()
    elif kind == "contacts":
        names = [
            as_dict(c.get("name")).get("formatted_name")
            for c in map(as_dict, as_list(message.get(kind)))
        ]
        text = "[contact] " + ", ".join(str(n) for n in names if n)
    elif kind == "reaction":
        text = f"[reaction] {body.get('emoji') or 'removed'}"
    elif kind == "button":
        text = str(body.get("text") or "[button]")
    elif kind == "interactive":
        reply = as_dict(body.get("button_reply") or body.get("list_reply"))
        text = str(reply.get("title") or "[interactive]")
    else:  # unsupported, system, order, ...: kept, with the raw payload
        titles = [str(as_dict(e).get("title")) for e in as_list(message.get("errors"))]
        text = f"[{kind}]" + (f" {'; '.join(titles)}" if titles else "")
    return text.strip() or f"[{kind}]", "text", None, True


async def fetch_media(svc: Services, job: Job) -> dict[str, Any]:
    """The ``whatsapp.media`` job of an inbound media message, already stored and
    delivered with ``mediaStatus: pending``: stream the media from the Graph API into the
    blob store through `files.store_media` (like an upload: sniffed, thumbnailed, and a
    voice note transcribed into the message), attached with ``mediaStatus: stored``; or
    after the last retry, or at once when Meta cannot give it, mark it ``failed`` with
    Meta's error code and title. Each step is a ``message.updated`` event; a retry of a
    finished download attaches nothing twice."""
    bridge = bridge_of(svc)
    user_id = job.user_id
    payload = as_dict(job.payload)
    if user_id is None or not isinstance(payload.get("messageId"), str):
        raise PermanentFailure("media job without a user or message")
    message_id = UUID(payload["messageId"])
    message = await svc.store.messages.get(user_id, message_id)
    if message is None:
        return {"skipped": "message deleted"}
    if as_dict(message.metadata).get("mediaStatus") == "stored":
        return {"messageId": str(message_id), "duplicate": True}
    media = as_dict(payload.get("media"))
    wamid = str(payload.get("wamid") or "")
    media_id = str(media.get("id") or "")
    connection = await svc.store.whatsapp.connection(user_id)
    token = None
    if connection is not None and connection.phone_number_id == payload.get("phoneNumberId"):
        token = decrypt(bridge, connection.access_token, user_id)
    if not media_id or token is None:
        why = "no media id" if not media_id else "WhatsApp is not connected"
        await _media_failed(svc, user_id, message_id, {"code": None, "title": why})
        return {"messageId": str(message_id), "mediaStatus": "failed"}
    # The same wamid always makes the same file id and blob key: a retry rewrites the
    # blob and finds the row it stored, never adds one.
    file_id = uuid5(NAMESPACE_URL, f"memoryd:whatsapp:{user_id}:{wamid}")
    max_bytes = svc.settings.whatsapp_max_media_bytes
    filename = media.get("filename")
    try:
        info = await bridge.graph.media(token, media_id)
        if info.file_size is not None and info.file_size > max_bytes:
            raise GraphError(413, f"media larger than {max_bytes} bytes")
        # The lookup's sha256 (hex), else the webhook's (base64); checked before the blob
        # commits, so a corrupt download is never stored.
        expected = info.sha256 or media.get("sha256")
        chunks = bridge.graph.stream(token, info.url, max_bytes=max_bytes, sha256=expected)
        record = await store_media(
            svc,
            user_id,
            file_id,
            chunks,
            original_filename=str(filename) if filename else None,
            memory_id=message.memory_id,
            message_id=message_id,
            metadata={"source": "whatsapp", "wamid": wamid, "mediaId": media_id,
                      "mimeType": info.mime_type[:100]},
            max_bytes=max_bytes,
            message_metadata={"mediaStatus": "stored"},
        )  # fmt: skip
    except ValidationFailed:  # the message was deleted while its media downloaded
        return {"skipped": "message deleted"}
    except (GraphError, BlobError, OSError) as exc:  # OSError: the local disk
        error = exc if isinstance(exc, GraphError) else GraphError(0, "media not stored")
        if error.transient and job.attempts < job.max_attempts:
            raise RetryLater(
                f"media {media_id}: {exc}", retry_delay(bridge, job.attempts)
            ) from None
        log.warning("WhatsApp media not stored", extra={"wamid": wamid, "error": str(exc)})
        await _media_failed(svc, user_id, message_id, {"code": error.code, "title": error.title})
        if error.transient:  # retries used up: failed, and `POST /api/sync/force` redrives it
            raise PermanentFailure(f"media {media_id}: {exc}") from None
        return {"messageId": str(message_id), "mediaStatus": "failed", "code": error.code}
    return {"messageId": str(message_id), "mediaStatus": "stored", "fileId": str(record.id)}


async def _media_failed(
    svc: Services, user_id: UUID, message_id: UUID, error: dict[str, Any]
) -> None:
    result = await svc.store.whatsapp.merge_metadata(
        user_id, message_id, {"mediaStatus": "failed", "mediaError": error}
    )
    if result is not None:
        svc.publish(user_id, result[1])


async def _inbound_message(
    svc: Services, bridge: WhatsAppBridge, job: Job, payload: dict[str, Any]
) -> dict[str, Any]:
    user_id = job.user_id
    assert user_id is not None
    message = as_dict(payload.get("message"))
    wamid = str(message["id"])
    client_msg_id = _client_msg_id(wamid)
    earlier = await svc.store.messages.by_client_msg_id(user_id, client_msg_id)
    if earlier is not None:
        return {"messageId": str(earlier.id), "duplicate": True}
    wa_id = str(message.get("from") or "unknown")[:64]
    contact = as_dict(payload.get("contact"))
    name = as_dict(contact.get("profile")).get("name")
    name = str(name)[:255] if name else None
    thread = await svc.store.whatsapp.contact_thread(
        user_id,
        wa_id,
        name,
        category=CATEGORY,
        title=(name or f"+{wa_id}")[:255],
        metadata={"source": "whatsapp", "waId": wa_id, "contactName": name},
    )
    svc.publish(user_id, *thread.events)
    contact_name = name or thread.name

    content, message_type, media, keep_raw = _render(message)
    metadata: dict[str, Any] = {
        "source": "whatsapp",
        "wamid": wamid,
        "from": wa_id,
        "contactName": contact_name,
        "timestamp": message.get("timestamp"),
        "waType": message.get("type"),
        "participant": {"kind": "whatsapp", "waId": wa_id, "name": contact_name},
    }
    if keep_raw:
        metadata["raw"] = message
    if media is not None:  # stored and delivered now; the media follows as its own job
        metadata["mediaStatus"] = "pending"
    parent_id = None
    replied_to = as_dict(message.get("context")).get("id")
    if replied_to:
        parent = await svc.store.whatsapp.message_by_wamid(user_id, str(replied_to))
        if parent is not None and parent.memory_id == thread.memory_id:
            parent_id = parent.id
    base = svc.pipeline.server_plan()

    async def plan(context: SendContext, new: NewMessage) -> SendPlan:
        planned = await base(context, new)
        if media is not None:
            planned.jobs = (_media_job(user_id, payload, wamid, media),)
        return planned

    stored, event = await svc.store.messages.create(
        user_id,
        thread.memory_id,
        NewMessage(
            content=content,
            message_type=message_type,
            metadata=metadata,
            parent_id=parent_id,
            client_msg_id=client_msg_id,
        ),
        plan=plan,
    )
    if event is not None and media is not None:
        svc.wake_jobs()
    svc.publish(user_id, event)
    await svc.store.whatsapp.set_sync_state(user_id, synced=True, status="connected")
    return {"messageId": str(stored.id), "duplicate": event is None}


def _media_job(
    user_id: UUID, payload: dict[str, Any], wamid: str, media: dict[str, Any]
) -> JobFactory:
    async def build(message: Message) -> NewJob:
        return NewJob(
            kind=MEDIA,
            payload={"messageId": str(message.id), "wamid": wamid, "media": media,
                     "phoneNumberId": payload.get("phoneNumberId")},
            user_id=user_id,
            dedupe_key=dedupe_key("media", wamid),
        )  # fmt: skip

    return build


async def _inbound_status(
    svc: Services, bridge: WhatsAppBridge, job: Job, payload: dict[str, Any]
) -> dict[str, Any]:
    user_id = job.user_id
    assert user_id is not None
    status = as_dict(payload.get("status"))
    wamid, state = str(status["id"]), str(status["status"])
    if state not in FORWARD_FROM:  # e.g. "deleted", "warning": nothing to move
        return {"ignored": f"status {state}"}
    message = await svc.store.whatsapp.message_by_wamid(user_id, wamid)
    if message is None:
        # Sent, but the send's answer (and its wamid) never got recorded: the message id we
        # passed as biz_opaque_callback_data still names it.
        message = await _by_callback(svc, user_id, status.get("biz_opaque_callback_data"))
    if message is None:
        if job.attempts < _UNKNOWN_STATUS_ATTEMPTS:  # the send may not be recorded yet
            raise RetryLater(f"no message with wamid {wamid} yet", retry_delay(bridge, 1))
        return {"ignored": "unknown wamid"}
    changes: dict[str, Any] = {"wamid": wamid}
    if state == "failed":
        error = as_dict(next(iter(as_list(status.get("errors"))), {}))
        changes["whatsappError"] = {
            "code": error.get("code"),
            "title": error.get("title"),
            "message": error.get("message") or error.get("title"),
            "details": as_dict(error.get("error_data")).get("details"),
        }
    result = await svc.store.whatsapp.advance_status(user_id, message.id, state, changes)
    if result is None:
        return {"messageId": str(message.id), "stale": True}
    svc.publish(user_id, result[1])
    return {"messageId": str(message.id), "status": state}


async def _by_callback(svc: Services, user_id: UUID, callback: Any) -> Message | None:
    if not isinstance(callback, str):
        return None
    try:
        message_id = UUID(callback)
    except ValueError:
        return None
    message = await svc.store.messages.get(user_id, message_id)
    if message is None or as_dict(message.metadata).get("source") != "whatsapp":
        return None
    return message if not as_dict(message.metadata).get("wamid") else None


async def process_inbound(svc: Services, job: Job) -> dict[str, Any]:
    bridge = bridge_of(svc)
    payload = as_dict(job.payload)
    if job.user_id is None:
        raise PermanentFailure("inbound WhatsApp job without a user")
    if payload.get("kind") == "message":
        return await _inbound_message(svc, bridge, job, payload)
    if payload.get("kind") == "status":
        return await _inbound_status(svc, bridge, job, payload)
    raise PermanentFailure(f"unknown inbound item {payload.get('kind')!r}")
