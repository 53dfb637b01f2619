"""/api/webhooks/whatsapp: Meta's verification handshake and its signed deliveries."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

from memoryd.handlers import whatsapp
from memoryd.server.http import json_response, services
from memoryd.server.operations import Op, Routes

routes = Routes(tag="Webhooks")


class HubVerification(
    msgspec.Struct,
    kw_only=True,
    rename={"mode": "hub.mode", "verify_token": "hub.verify_token", "challenge": "hub.challenge"},
):
    """The handshake's query, for the document; the route reads the raw parameters so that
    a wrong or missing one is Meta's 403, not a 400."""

    mode: Literal["subscribe"]
    verify_token: str
    challenge: str


class WhatsAppWebhook(msgspec.Struct, kw_only=True):
    """A WhatsApp Cloud API webhook delivery as Meta sends it: `entry[].changes[].value`
    carries `metadata.phone_number_id`, `contacts`, `messages` and `statuses`."""

    object: str
    entry: list[dict[str, Any]]


@routes.get(
    "/api/webhooks/whatsapp",
    Op(
        "verifyWhatsAppWebhook",
        "Meta's webhook verification handshake",
        query=HubVerification,
        response={"type": "string"},
        media="text/plain",
        auth=False,
        errors=(403,),
        notes="Requires `hub.mode=subscribe` and `hub.verify_token` equal to "
        "WHATSAPP_VERIFY_TOKEN; answers the raw `hub.challenge`, else 403.",
    ),
)
async def verify(request: web.Request) -> web.Response:
    """Answer Meta's subscription check with the raw ``hub.challenge``."""
    query = request.query
    whatsapp.verify_subscription(
        services(request), query.get("hub.mode"), query.get("hub.verify_token")
    )
    return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")


@routes.post(
    "/api/webhooks/whatsapp",
    Op(
        "receiveWhatsAppWebhook",
        "WhatsApp Cloud API webhook deliveries",
        body=WhatsAppWebhook,
        response=whatsapp.WebhookReceipt,
        auth=False,
        errors=(403,),
        notes="Requires `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body "
        "with WHATSAPP_APP_SECRET; a missing or wrong signature is 403 and nothing is "
        "stored. Every message and status is stored (deduplicated by wamid) before the "
        "200; processing follows. Items for a phone number no user connected are counted "
        "in `ignored` and dropped.",
    ),
)
async def receive(request: web.Request) -> web.Response:
    """Signature checked over the raw bytes; every item is stored before the 200."""
    raw = await request.read()
    receipt = await whatsapp.receive_webhook(
        services(request), raw, request.headers.get("X-Hub-Signature-256")
    )
    return json_response(receipt)
