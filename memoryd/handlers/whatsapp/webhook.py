"""Meta's webhook: the subscription handshake, and signed deliveries stored as jobs.

`receive_webhook` checks Meta's signature over the raw body, reads the payload item by
item (`memoryd.bridges.whatsapp.parse_webhook`: an unreadable item is skipped, the rest
stored), routes each message and status by ``metadata.phone_number_id`` to the user who
connected that number, and stores one ``whatsapp.inbound`` job per item (dedupe key: the
wamid, or the status id and status) before the webhook is answered. Meta retries
webhooks for days; the dedupe keys make every retry a no-op.
"""

from __future__ import annotations

import hmac

from memoryd.bridges.whatsapp import InboundItem, WebhookMalformed, parse_webhook
from memoryd.crypto import verify_hub_signature
from memoryd.errors import Forbidden, ValidationFailed
from memoryd.handlers.context import Services
from memoryd.handlers.whatsapp.shared import INBOUND, dedupe_key, log
from memoryd.protocol.whatsapp import WebhookReceipt
from memoryd.storage.jobs import NewJob


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


def _job_payload(item: InboundItem) -> tuple[str, dict[str, object]]:
    """The dedupe key and payload of an item's ``whatsapp.inbound`` job."""
    number = item.phone_number_id
    if item.kind == "message":
        return dedupe_key("message", item.id), {
            "kind": "message", "phoneNumberId": number, "message": item.raw,
            "contact": item.contact,
        }  # fmt: skip
    assert item.state is not None
    return dedupe_key("status", item.id, item.state), {
        "kind": "status", "phoneNumberId": number, "status": item.raw,
    }  # fmt: skip


async def receive_webhook(svc: Services, raw: bytes, signature: str | None) -> WebhookReceipt:
    """Check the signature, then store every routable item as a job before answering.

    Raises Forbidden (bad or missing signature) or ValidationFailed (not a JSON object);
    either way nothing is stored. An item that cannot be read is ignored (and logged);
    the others are stored.
    """
    _check_signature(svc, raw, signature)
    try:
        delivery = parse_webhook(raw)
    except WebhookMalformed as exc:
        raise ValidationFailed(
            "Malformed webhook body" if exc.json else "Malformed JSON body",
            code="invalid_json",
            details=[{"field": None, "message": str(exc)}],
        ) from None
    if delivery.object != "whatsapp_business_account":
        log.info("ignored a webhook for object %r", delivery.object)
        return WebhookReceipt(received=0, stored=0, duplicates=0, ignored=1)
    for reason in delivery.skipped:
        log.warning("WhatsApp webhook part skipped", extra={"reason": reason[:500]})
    for error in delivery.errors:
        log.warning("WhatsApp reported an error", extra={"error": error})
    items = delivery.items
    owners = await svc.store.whatsapp.users_for_numbers(sorted({i.phone_number_id for i in items}))
    jobs: list[NewJob] = []
    ignored = len(delivery.skipped)
    for item in items:
        user_id = owners.get(item.phone_number_id)
        if user_id is None:
            ignored += 1
            log.warning(
                "WhatsApp webhook for a phone number no user connected",
                extra={"number": item.phone_number_id, "item": item.kind},
            )
            continue
        key, payload = _job_payload(item)
        jobs.append(NewJob(kind=INBOUND, payload=payload, user_id=user_id, dedupe_key=key))
    stored = await svc.store.whatsapp.enqueue_all(jobs)
    if stored:
        svc.wake_jobs()
    return WebhookReceipt(
        received=len(items), stored=stored, duplicates=len(jobs) - stored, ignored=ignored
    )
