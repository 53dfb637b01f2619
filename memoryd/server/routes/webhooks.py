"""/api/webhooks/whatsapp: Meta's verification handshake and its signed deliveries."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers import whatsapp
from memoryd.server.http import json_response, services

routes = web.RouteTableDef()


@routes.get("/api/webhooks/whatsapp")
async def verify(request: web.Request) -> web.Response:
    """Answer Meta's subscription check with the raw ``hub.challenge``."""
    query = request.query
    whatsapp.verify_subscription(
        services(request), query.get("hub.mode"), query.get("hub.verify_token")
    )
    return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")


@routes.post("/api/webhooks/whatsapp")
async def receive(request: web.Request) -> web.Response:
    """Signature checked over the raw bytes; every item is stored before the 200."""
    raw = await request.read()
    receipt = await whatsapp.receive_webhook(
        services(request), raw, request.headers.get("X-Hub-Signature-256")
    )
    return json_response(receipt)
