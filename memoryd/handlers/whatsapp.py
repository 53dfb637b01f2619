"""WhatsApp bridge: webhooks in, sends out, contacts as virtual participants.

Inbound: `receive_webhook` checks Meta's signature over the raw body, routes each message
and status by ``metadata.phone_number_id`` to the user who connected that number, and
stores one ``whatsapp.inbound`` job per item (dedupe key: the wamid, or the status id and
status) before the webhook is answered. `process_inbound` then turns a message into a
message of the contact's thread, or a status into a forward-only status change. Meta
retries webhooks for days; the dedupe keys and the message's ``clientMsgId``
(``wa:<wamid>``) make every retry a no-op.

Outbound: `plan_outbound`, a send planner, marks a message sent in a WhatsApp thread
``pending`` and adds a ``whatsapp.outbound`` job (dedupe key: the message id) to the send's
transaction. `deliver_outbound` sends it once: the wamid is recorded before the
job finishes, and a retry that finds one recorded does not send again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mimetypes
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec

from memoryd.bridges.whatsapp import GraphError, WhatsAppBridge
from memoryd.crypto import DecryptionFailed, verify_hub_signature
from memoryd.errors import Conflict, Forbidden, ValidationFailed
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import PermanentFailure, RetryLater
from memoryd.handlers.pipeline import Send
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Message
from memoryd.protocol.whatsapp import WebhookReceipt
from memoryd.storage.jobs import Job, NewJob
from memoryd.storage.messages import JobFactory, NewMessage, SendContext, SendPlan
from memoryd.storage.whatsapp import FORWARD_FROM, NewFile

log = logging.getLogger("memoryd.whatsapp")

INBOUND = "whatsapp.inbound"
OUTBOUND = "whatsapp.outbound"
MEDIA = "whatsapp.media"  # an inbound message's media, fetched after the message is stored
KINDS = (INBOUND, OUTBOUND, MEDIA)
CATEGORY = ("WhatsApp", "message-circle", "#25D366")
MAX_TEXT = 4096  # the Cloud API's limit for a text body
# Reserved metadata keys a client cannot set on a message it sends to WhatsApp.
_RESERVED = ("source", "wamid", "whatsappError", "participant", "to")
_SEND_STARTED = "sendStarted"  # job payload flag, set just before the Graph API call
_DELIVERY_UNKNOWN = {
    "code": None,
    "title": "Delivery unknown",
    "message": "The server stopped while sending this message, so it may or may not have "
    "reached the contact. It is not sent again automatically; send it again if needed.",
}
_UNKNOWN_STATUS_ATTEMPTS = 5  # a status for a wamid we never sent: wait a little, then drop
_MEDIA_TYPES = {  # webhook type -> (messageType, placeholder)
    "image": ("image", "[image]"),
    "sticker": ("image", "[sticker]"),
    "audio": ("voice", "[audio]"),
    "voice": ("voice", "[voice message]"),
    "video": ("document", "[video]"),
    "document": ("document", "[document]"),
}
_decode_json = msgspec.json.Decoder().decode


def token_aad(user_id: UUID) -> bytes:
    """Associated data binding a stored access token to its owner and provider."""
    return f"whatsapp:{user_id}".encode()


def _retry_delay(bridge: WhatsAppBridge, attempts: int, hint: float | None = None) -> float:
    if hint is not None and hint >= 0:
        return min(300.0, hint)
    return random.uniform(0.5, 1.0) * min(300.0, bridge.retry_base * 2.0 ** max(0, attempts - 1))


# -- the webhook ---------------------------------------------------------------------------


def verify_subscription(svc: Services, mode: str | None, token: str | None) -> None:
    """Meta's verification request: ``hub.mode=subscribe`` and our verify token."""
    expected = svc.settings.whatsapp_verify_token
    if (
        mode != "subscribe"
        or not expected
        or token is None
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise Forbidden("Webhook verification failed", code="forbidden")


def _check_signature(svc: Services, raw: bytes, signature: str | None) -> None:
    secret = svc.settings.whatsapp_app_secret
    if not secret:
        log.warning("WhatsApp webhook refused: WHATSAPP_APP_SECRET is not set")
        raise Forbidden("WhatsApp webhooks are not configured", code="forbidden")
    if not verify_hub_signature(secret, raw, signature):
        raise Forbidden("Invalid webhook signature", code="invalid_signature")


def _dedupe_key(prefix: str, *parts: str) -> str:
    key = ":".join((prefix, *parts))
    if len(key) <= 200:
        return key
    return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass
class _Item:
    phone_number_id: str
    kind: str  # "message" | "status"
    key: str
    payload: dict[str, Any]


def _items(payload: dict[str, Any]) -> tuple[list[_Item], int]:
    """Every message and status of a webhook body, and how many changes were skipped."""
    items: list[_Item] = []
    skipped = 0
    for entry in _list(payload.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            value = _dict(change.get("value"))
            number = str(_dict(value.get("metadata")).get("phone_number_id") or "")
            if change.get("field") != "messages" or not number:
                skipped += 1
                continue
            for error in _list(value.get("errors")):
                log.warning("WhatsApp reported an error", extra={"number": number, "error": error})
            contacts = {str(c.get("wa_id")): c for c in map(_dict, _list(value.get("contacts")))}
            for message in map(_dict, _list(value.get("messages"))):
                wamid = str(message.get("id") or "")
                if not wamid:
                    skipped += 1
                    continue
                contact = contacts.get(str(message.get("from")))
                items.append(
                    _Item(
                        number,
                        "message",
                        _dedupe_key("message", wamid),
                        {"kind": "message", "phoneNumberId": number, "message": message,
                         "contact": contact},
                    )
                )  # fmt: skip
            for status in map(_dict, _list(value.get("statuses"))):
                sid, state = str(status.get("id") or ""), str(status.get("status") or "")
                if not sid or not state:
                    skipped += 1
                    continue
                items.append(
                    _Item(
                        number,
                        "status",
                        _dedupe_key("status", sid, state),
                        {"kind": "status", "phoneNumberId": number, "status": status},
                    )
                )
    return items, skipped


async def receive_webhook(svc: Services, raw: bytes, signature: str | None) -> WebhookReceipt:
    """Check the signature, then store every routable item as a job before answering.

    Raises Forbidden (bad or missing signature) or ValidationFailed (not a JSON object);
    either way nothing is stored.
    """
    _check_signature(svc, raw, signature)
    try:
        payload = _decode_json(raw)
    except msgspec.DecodeError as exc:
        raise ValidationFailed(
            "Malformed JSON body",
            code="invalid_json",
            details=[{"field": None, "message": str(exc)}],
        ) from None
    if not isinstance(payload, dict):
        raise ValidationFailed(
            "Malformed webhook body",
            code="invalid_json",
            details=[{"field": None, "message": "Expected a JSON object"}],
        )
    if payload.get("object") != "whatsapp_business_account":
        log.info("ignored a webhook for object %r", payload.get("object"))
        return WebhookReceipt(received=0, stored=0, duplicates=0, ignored=1)
    items, skipped = _items(payload)
    owners = await svc.store.whatsapp.users_for_numbers(sorted({i.phone_number_id for i in items}))
    jobs: list[NewJob] = []
    ignored = skipped
    for item in items:
        user_id = owners.get(item.phone_number_id)
        if user_id is None:
            ignored += 1
            log.warning(
                "WhatsApp webhook for a phone number no user connected",
                extra={"number": item.phone_number_id, "item": item.kind},
            )
            continue
        jobs.append(
            NewJob(kind=INBOUND, payload=item.payload, user_id=user_id, dedupe_key=item.key)
        )
    stored = await svc.store.whatsapp.enqueue_all(jobs)
    if stored:
        svc.wake_jobs()
    return WebhookReceipt(
        received=len(items), stored=stored, duplicates=len(jobs) - stored, ignored=ignored
    )


# -- inbound processing ---------------------------------------------------------------------


def _client_msg_id(wamid: str) -> str:
    cid = f"wa:{wamid}"
    return cid if len(cid) <= 100 else f"wa:{hashlib.sha256(wamid.encode()).hexdigest()}"


def _render(message: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None, bool]:
    """``(content, messageType, media object or None, keep the raw payload)``."""
    kind = str(message.get("type") or "unknown")
    body = _dict(message.get(kind))
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
            _dict(c.get("name")).get("formatted_name") for c in map(_dict, _list(message.get(kind)))
        ]
        text = "[contact] " + ", ".join(str(n) for n in names if n)
    elif kind == "reaction":
        text = f"[reaction] {body.get('emoji') or 'removed'}"
    elif kind == "button":
        text = str(body.get("text") or "[button]")
    elif kind == "interactive":
        reply = _dict(body.get("button_reply") or body.get("list_reply"))
        text = str(reply.get("title") or "[interactive]")
    else:  # unsupported, system, order, ...: kept, with the raw payload
        titles = [str(_dict(e).get("title")) for e in _list(message.get("errors"))]
        text = f"[{kind}]" + (f" {'; '.join(titles)}" if titles else "")
    return text.strip() or f"[{kind}]", "text", None, True


def _extension(mime_type: str, filename: str | None) -> str:
    if filename:
        suffix = PurePath(filename).suffix
        if suffix and len(suffix) <= 10 and suffix[1:].isalnum():
            return suffix.lower()
    guessed = mimetypes.guess_extension(mime_type.split(";")[0].strip())
    return guessed or ".bin"


async def fetch_media(svc: Services, job: Job) -> dict[str, Any]:
    """The ``whatsapp.media`` job of an inbound media message, already stored and
    delivered with ``mediaStatus: pending``: download the media into a ``files`` row and
    attach it (``mediaStatus: stored``), or after the last retry, or at once when Meta
    cannot give it, mark it ``failed`` with Meta's error code and title. Each step is a
    ``message.updated`` event; a retry of a finished download attaches nothing twice."""
    bridge = _bridge(svc)
    user_id = job.user_id
    payload = _dict(job.payload)
    if user_id is None or not isinstance(payload.get("messageId"), str):
        raise PermanentFailure("media job without a user or message")
    message_id = UUID(payload["messageId"])
    message = await svc.store.messages.get(user_id, message_id)
    if message is None:
        return {"skipped": "message deleted"}
    if _dict(message.metadata).get("mediaStatus") == "stored":
        return {"messageId": str(message_id), "duplicate": True}
    media = _dict(payload.get("media"))
    wamid = str(payload.get("wamid") or "")
    media_id = str(media.get("id") or "")
    connection = await svc.store.whatsapp.connection(user_id)
    token = None
    if connection is not None and connection.phone_number_id == payload.get("phoneNumberId"):
        token = _decrypt(bridge, connection.access_token, user_id)
    if not media_id or token is None:
        why = "no media id" if not media_id else "WhatsApp is not connected"
        await _media_failed(svc, user_id, message_id, {"code": None, "title": why})
        return {"messageId": str(message_id), "mediaStatus": "failed"}
    # The same wamid always makes the same file id and path: a retry rewrites, never adds.
    file_id = uuid5(NAMESPACE_URL, f"memoryd:whatsapp:{user_id}:{wamid}")
    try:
        info = await bridge.graph.media(token, media_id)
        relative, path = bridge.media_path(
            str(user_id), str(file_id), _extension(info.mime_type, media.get("filename"))
        )
        got = await bridge.graph.download(token, info.url, path, bridge.max_media_bytes)
        expected = (info.sha256 or "").lower()
        if len(expected) == 64 and expected != got.sha256:
            raise GraphError(502, "media checksum mismatch")
    except GraphError as exc:
        if exc.transient and job.attempts < job.max_attempts:
            raise RetryLater(
                f"media {media_id}: {exc}", _retry_delay(bridge, job.attempts)
            ) from None
        log.warning("WhatsApp media not stored", extra={"wamid": wamid, "error": str(exc)})
        await _media_failed(svc, user_id, message_id, {"code": exc.code, "title": exc.title})
        if exc.transient:  # retries used up: failed, and `POST /api/sync/force` redrives it
            raise PermanentFailure(f"media {media_id}: {exc}") from None
        return {"messageId": str(message_id), "mediaStatus": "failed", "code": exc.code}
    original = str(media.get("filename") or path.name)
    result = await svc.store.whatsapp.attach_file(
        message_id,
        NewFile(
            id=file_id,
            user_id=user_id,
            memory_id=message.memory_id,
            filename=path.name,
            original_filename=original[:255],
            file_type=info.mime_type[:100],
            file_size=got.size,
            storage_path=relative,
            metadata={"source": "whatsapp", "wamid": wamid, "mediaId": media_id,
                      "sha256": got.sha256},
        ),
        {"mediaStatus": "stored"},
    )  # fmt: skip
    if result is not None:
        svc.publish(user_id, result[1])
    return {"messageId": str(message_id), "mediaStatus": "stored", "fileId": str(file_id)}


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
    message = _dict(payload.get("message"))
    wamid = str(message["id"])
    client_msg_id = _client_msg_id(wamid)
    earlier = await svc.store.messages.by_client_msg_id(user_id, client_msg_id)
    if earlier is not None:
        return {"messageId": str(earlier.id), "duplicate": True}
    wa_id = str(message.get("from") or "unknown")[:64]
    contact = _dict(payload.get("contact"))
    name = _dict(contact.get("profile")).get("name")
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
    replied_to = _dict(message.get("context")).get("id")
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
            dedupe_key=_dedupe_key("media", wamid),
        )  # fmt: skip

    return build


async def _inbound_status(
    svc: Services, bridge: WhatsAppBridge, job: Job, payload: dict[str, Any]
) -> dict[str, Any]:
    user_id = job.user_id
    assert user_id is not None
    status = _dict(payload.get("status"))
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
            raise RetryLater(f"no message with wamid {wamid} yet", _retry_delay(bridge, 1))
        return {"ignored": "unknown wamid"}
    changes: dict[str, Any] = {"wamid": wamid}
    if state == "failed":
        error = _dict(next(iter(_list(status.get("errors"))), {}))
        changes["whatsappError"] = {
            "code": error.get("code"),
            "title": error.get("title"),
            "message": error.get("message") or error.get("title"),
            "details": _dict(error.get("error_data")).get("details"),
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
    if message is None or _dict(message.metadata).get("source") != "whatsapp":
        return None
    return message if not _dict(message.metadata).get("wamid") else None


async def process_inbound(svc: Services, job: Job) -> dict[str, Any]:
    bridge = _bridge(svc)
    payload = _dict(job.payload)
    if job.user_id is None:
        raise PermanentFailure("inbound WhatsApp job without a user")
    if payload.get("kind") == "message":
        return await _inbound_message(svc, bridge, job, payload)
    if payload.get("kind") == "status":
        return await _inbound_status(svc, bridge, job, payload)
    raise PermanentFailure(f"unknown inbound item {payload.get('kind')!r}")


# -- outbound -------------------------------------------------------------------------------


async def plan_outbound(send: Send) -> None:
    """The send pipeline's planner for WhatsApp threads (its contact was read in the
    send's transaction): the message is stored ``pending``, with the contact in its
    metadata, together with its outbox job. Other memories are left alone."""
    target = send.context.whatsapp
    if target is None:
        return
    send.caller.require(Permission.SYNC_WHATSAPP)
    if not target.connected:
        raise Conflict(
            "WhatsApp is not connected: connect it again to reply in this thread",
            code="whatsapp_not_connected",
        )
    new = send.message
    problems = []
    if new.message_type != "text":
        problems.append({"field": "messageType", "message": "only text goes to WhatsApp"})
    if new.attachments:
        problems.append({"field": "attachments", "message": "not sent to WhatsApp yet"})
    if len(new.content) > MAX_TEXT:
        problems.append({"field": "content", "message": f"WhatsApp takes at most {MAX_TEXT}"})
    if problems:
        raise ValidationFailed("Validation failed", details=problems)
    given = new.metadata
    metadata = (
        dict(given) if isinstance(given, dict) else ({} if given is None else {"value": given})
    )
    for key in _RESERVED:
        metadata.pop(key, None)
    metadata.update(source="whatsapp", to=target.wa_id)
    user_id = send.caller.user_id

    async def job(message: Message) -> NewJob:
        return NewJob(
            kind=OUTBOUND,
            payload={"messageId": str(message.id)},
            user_id=user_id,
            dedupe_key=str(message.id),
        )

    send.message = replace(new, metadata=metadata, status="pending")
    send.add_job(job)


def _decrypt(bridge: WhatsAppBridge, ciphertext: str, user_id: UUID) -> str | None:
    try:
        return bridge.box.decrypt(ciphertext, token_aad(user_id))
    except DecryptionFailed:
        log.error("stored WhatsApp token does not decrypt (MEMORYD_SECRET_KEY changed?)")
        return None


async def _fail(svc: Services, user_id: UUID, message: Message, error: dict[str, Any]) -> None:
    result = await svc.store.whatsapp.advance_status(
        user_id, message.id, "failed", {"whatsappError": error}
    )
    if result is not None:
        svc.publish(user_id, result[1])


async def deliver_outbound(svc: Services, job: Job) -> dict[str, Any]:
    """Send one message to WhatsApp, at most once per recorded wamid."""
    bridge = _bridge(svc)
    user_id = job.user_id
    message_id = _dict(job.payload).get("messageId")
    if user_id is None or not isinstance(message_id, str):
        raise PermanentFailure("outbound WhatsApp job without a user or message")
    message = await svc.store.messages.get(user_id, UUID(message_id))
    if message is None:
        return {"skipped": "message deleted"}
    recorded = _dict(message.metadata).get("wamid")
    if recorded:  # sent before (an earlier attempt, or its status webhook): never again
        return {"wamid": recorded, "resent": False}
    if message.status not in ("pending", "failed"):
        return {"skipped": f"status {message.status}"}
    target = await svc.store.whatsapp.outbound_target(user_id, message.memory_id)
    connection = await svc.store.whatsapp.connection(user_id)
    if target is None or connection is None:
        await _fail(svc, user_id, message, {"code": None, "title": "WhatsApp is not connected"})
        raise PermanentFailure("WhatsApp is not connected")
    token = _decrypt(bridge, connection.access_token, user_id)
    if token is None:
        await _fail(svc, user_id, message, {"code": None, "title": "Access token unreadable"})
        raise PermanentFailure("stored access token does not decrypt")

    payload = _dict(job.payload)
    if payload.get(_SEND_STARTED):
        # An earlier attempt began this send and its node died (or stopped) before the
        # answer was recorded: the contact may have it. Sending again could deliver it
        # twice, so the user decides.
        await _fail(svc, user_id, message, _DELIVERY_UNKNOWN)
        raise PermanentFailure("an earlier attempt stopped during the send")

    number = connection.phone_number_id
    wait = bridge.throttle.reserve(number)
    # Past a short wait, give the slot back and come back later; on the last attempts wait
    # here instead, so the throughput limit never uses up a job's attempts.
    if wait > bridge.max_throttle_wait and job.attempts < job.max_attempts - 1:
        bridge.throttle.release(number)
        raise RetryLater(f"throughput limit of {number}", wait)
    if wait > 0:
        await asyncio.sleep(wait)
    assert job.leased_by is not None
    if not await svc.store.jobs.set_payload(
        job.id, job.leased_by, {**payload, _SEND_STARTED: True}
    ):
        raise RetryLater("lost the job's lease before sending", 1.0)
    try:
        sent = await bridge.graph.send_text(
            token, number, target.wa_id, message.content, callback_data=str(message.id)
        )
    except GraphError as exc:
        if exc.ambiguous:
            # Perhaps sent: the flag stays. Meta's `sent` status (it carries the message id
            # as callback data) records the wamid meanwhile; the retry then finds it, or
            # fails the message as "Delivery unknown" rather than send it twice.
            raise RetryLater(
                f"Graph API: {exc.message}", _retry_delay(bridge, job.attempts)
            ) from None
        # Meta answered with an error: nothing was sent, a later attempt may send it.
        await svc.store.jobs.set_payload(job.id, job.leased_by, payload)
        if exc.transient and job.attempts < job.max_attempts:
            delay = _retry_delay(bridge, job.attempts, exc.retry_after)
            raise RetryLater(f"Graph API {exc.status}: {exc.message}", delay) from None
        await _fail(svc, user_id, message, exc.as_metadata())
        if exc.code == 190 or exc.status in (401, 403):  # the token itself: needs a reconnect
            await svc.store.whatsapp.set_sync_state(user_id, synced=False, status="error")
        raise PermanentFailure(f"Graph API {exc.status} ({exc.code}): {exc.message}") from None
    result = await svc.store.whatsapp.record_sent(user_id, message.id, sent.wamid)
    if result is not None:
        svc.publish(user_id, result[1])
    await svc.store.whatsapp.set_sync_state(user_id, synced=True, status="connected")
    return {"wamid": sent.wamid}


# -- wiring ---------------------------------------------------------------------------------


def _bridge(svc: Services) -> WhatsAppBridge:
    if svc.whatsapp is None:  # the runner registers these kinds only when it is configured
        raise RetryLater("WhatsApp is not configured on this node", 60.0)
    return svc.whatsapp


def job_handlers(svc: Services) -> dict[str, Callable[[Job], Awaitable[Any]]]:
    """The job kinds this module runs, bound to ``svc`` (for `JobRunner.register`)."""

    async def inbound(job: Job) -> Any:
        return await process_inbound(svc, job)

    async def outbound(job: Job) -> Any:
        return await deliver_outbound(svc, job)

    async def media(job: Job) -> Any:
        return await fetch_media(svc, job)

    return {INBOUND: inbound, OUTBOUND: outbound, MEDIA: media}
