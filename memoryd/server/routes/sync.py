"""/api/sync: provider status, WhatsApp connect and disconnect, forced sync."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers.whatsapp import connection as sync
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, read_body, services

routes = web.RouteTableDef()


def _webhook_url(request: web.Request) -> str:
    """Where Meta should post: this server's public address as the request saw it."""
    scheme, host = request.scheme, request.host
    if services(request).settings.trust_proxy:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return f"{scheme}://{host}/api/webhooks/whatsapp"


@routes.get("/api/sync/status")
async def status(request: web.Request) -> web.Response:
    who = await caller(request)
    return json_response(await sync.sync_status(services(request), who))


@routes.post("/api/sync/whatsapp/connect")
async def connect(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(sync.ConnectWhatsAppRequest, await read_body(request))
    result = await sync.connect_whatsapp(services(request), who, req, _webhook_url(request))
    return json_response(result)


@routes.delete("/api/sync/whatsapp")
async def disconnect(request: web.Request) -> web.Response:
    who = await caller(request)
    await sync.disconnect_whatsapp(services(request), who)
    return web.Response(status=204)


@routes.post("/api/sync/force")
async def force(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(sync.ForceSyncRequest, await read_body(request))
    return json_response(await sync.force_sync(services(request), who, req))
