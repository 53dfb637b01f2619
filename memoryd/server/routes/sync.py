"""/api/sync: provider status, WhatsApp connect and disconnect, forced sync."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers.rbac import Permission
from memoryd.handlers.whatsapp import connection as sync
from memoryd.protocol import whatsapp as bodies
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, read_body, services
from memoryd.server.operations import Op, Routes

routes = Routes(tag="Sync")

_SYNC = Permission.SYNC_WHATSAPP


def _webhook_url(request: web.Request) -> str:
    """Where Meta should post: this server's public address as the request saw it."""
    scheme, host = request.scheme, request.host
    if services(request).settings.trust_proxy:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return f"{scheme}://{host}/api/webhooks/whatsapp"


@routes.get(
    "/api/sync/status",
    Op("syncStatus", "Status of each sync provider", response=bodies.SyncStatus, permission=_SYNC),
)
async def status(request: web.Request) -> web.Response:
    who = await caller(request)
    return json_response(await sync.sync_status(services(request), who))


@routes.post(
    "/api/sync/whatsapp/connect",
    Op(
        "connectWhatsApp",
        "Connect a WhatsApp Business number",
        body=bodies.ConnectWhatsAppRequest,
        response=bodies.ConnectWhatsAppResult,
        permission=_SYNC,
        errors=(409, 502, 503),
        notes="`phoneNumber` is the business phone number in any common formatting "
        "(`+1 555-078-3881`), matched on its digits among the numbers of "
        "`businessAccountId` (`GET /{businessAccountId}/phone_numbers`; 400 "
        "`whatsapp_unknown_number` lists the account's numbers), or the phone number **id** "
        "(Meta: WhatsApp > API Setup); `phoneNumberId` gives the id explicitly. The "
        "number and token are checked with the Graph API (`whatsapp_rejected` 400 when "
        "refused); the token is stored encrypted (AES-256-GCM). 409 `whatsapp_number_taken` "
        "when another account has the number. Configure Meta's webhook with the returned "
        "`webhookUrl` and `verificationCode`. See docs/whatsapp.md.",
    ),
)
async def connect(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(bodies.ConnectWhatsAppRequest, await read_body(request))
    result = await sync.connect_whatsapp(services(request), who, req, _webhook_url(request))
    return json_response(result)


@routes.delete(
    "/api/sync/whatsapp",
    Op(
        "disconnectWhatsApp",
        "Disconnect WhatsApp",
        status=204,
        permission=_SYNC,
        notes="Forgets the access token; threads and messages stay. Idempotent.",
    ),
)
async def disconnect(request: web.Request) -> web.Response:
    who = await caller(request)
    await sync.disconnect_whatsapp(services(request), who)
    return web.Response(status=204)


@routes.post(
    "/api/sync/force",
    Op(
        "forceSync",
        "Retry failed WhatsApp work now",
        body=bodies.ForceSyncRequest,
        response=bodies.ForceSyncResult,
        permission=_SYNC,
        errors=(409,),
        notes="Failed jobs go back in the queue: `push` the sends, `pull` the inbound "
        "messages and statuses, `both` by default. 409 `whatsapp_not_connected`.",
    ),
)
async def force(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(bodies.ForceSyncRequest, await read_body(request))
    return json_response(await sync.force_sync(services(request), who, req))
