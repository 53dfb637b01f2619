"""Outbound WhatsApp sends: `plan_outbound`, a send planner, marks a message sent in a
WhatsApp thread ``pending`` and adds a ``whatsapp.outbound`` job (dedupe key: the message
id) to the send's transaction. `deliver_outbound` sends it once: the wamid is recorded
before the job finishes, and a retry that finds one recorded does not send again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from uuid import UUID

from memoryd.bridges.whatsapp import GraphError
from memoryd.errors import Conflict, ValidationFailed
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import PermanentFailure, RetryLater
from memoryd.handlers.pipeline import Send
from memoryd.handlers.rbac import Permission
from memoryd.handlers.whatsapp.shared import OUTBOUND, as_dict, bridge_of, decrypt, retry_delay
from memoryd.protocol.models import Message
from memoryd.storage.jobs import Job, NewJob

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


async def _fail(svc: Services, user_id: UUID, message: Message, error: dict[str, Any]) -> None:
    result = await svc.store.whatsapp.advance_status(
        user_id, message.id, "failed", {"whatsappError": error}
    )
    if result is not None:
        svc.publish(user_id, result[1])


async def deliver_outbound(svc: Services, job: Job) -> dict[str, Any]:
    """Send one message to WhatsApp, at most once per recorded wamid."""
    bridge = bridge_of(svc)
    user_id = job.user_id
    message_id = as_dict(job.payload).get("messageId")
    if user_id is None or not isinstance(message_id, str):
        raise PermanentFailure("outbound WhatsApp job without a user or message")
    message = await svc.store.messages.get(user_id, UUID(message_id))
    if message is None:
        return {"skipped": "message deleted"}
    recorded = as_dict(message.metadata).get("wamid")
    if recorded:  # sent before (an earlier attempt, or its status webhook): never again
        return {"wamid": recorded, "resent": False}
    if message.status not in ("pending", "failed"):
        return {"skipped": f"status {message.status}"}
    target = await svc.store.whatsapp.outbound_target(user_id, message.memory_id)
    connection = await svc.store.whatsapp.connection(user_id)
    if target is None or connection is None:
        await _fail(svc, user_id, message, {"code": None, "title": "WhatsApp is not connected"})
        raise PermanentFailure("WhatsApp is not connected")
    token = decrypt(bridge, connection.access_token, user_id)
    if token is None:
        await _fail(svc, user_id, message, {"code": None, "title": "Access token unreadable"})
        raise PermanentFailure("stored access token does not decrypt")

    payload = as_dict(job.payload)
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
                f"Graph API: {exc.message}", retry_delay(bridge, job.attempts)
            ) from None
        # Meta answered with an error: nothing was sent, a later attempt may send it.
        await svc.store.jobs.set_payload(job.id, job.leased_by, payload)
        if exc.transient and job.attempts < job.max_attempts:
            delay = retry_delay(bridge, job.attempts, exc.retry_after)
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
