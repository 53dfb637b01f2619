"""/api/sync: connect and disconnect WhatsApp, the status of each provider, force a sync.

Shapes follow the seed plan's ``SyncStatusResponse``, ``WhatsAppConnectRequest`` /
``WhatsAppConnectResponse`` and ``ForceSyncRequest`` / ``ForceSyncResponse``.
"""

from __future__ import annotations

import math
from typing import Any
from uuid import uuid4

from memoryd.bridges.whatsapp import GraphError, WhatsAppBridge
from memoryd.errors import ClientError, Conflict, Unavailable, ValidationFailed
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.rbac import Permission
from memoryd.handlers.whatsapp.shared import INBOUND, KINDS, MEDIA, OUTBOUND, token_aad

# REST bodies live in protocol/; re-exported for the routes that name them through here
from memoryd.protocol.whatsapp import (
    ConnectWhatsAppRequest as ConnectWhatsAppRequest,
)
from memoryd.protocol.whatsapp import (
    ConnectWhatsAppResult,
    ForceSyncResult,
    ProviderStatus,
    SyncStatus,
)
from memoryd.protocol.whatsapp import (
    ForceSyncRequest as ForceSyncRequest,
)


class WhatsAppUnavailable(ClientError):
    status = 502
    code = "whatsapp_unavailable"


def _configured(svc: Services) -> WhatsAppBridge:
    if svc.whatsapp is None or not svc.settings.whatsapp_verify_token:
        raise Unavailable(
            "WhatsApp is not configured on this server "
            "(WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN)",
            code="whatsapp_not_configured",
        )
    return svc.whatsapp


def _rejected(exc: GraphError, field: str) -> ClientError:
    if exc.transient:
        return WhatsAppUnavailable(f"The Graph API could not be reached: {exc}")
    if exc.code == 190 or exc.status == 401:
        field = "accessToken"
    return ValidationFailed(
        "WhatsApp refused the phone number, the account or the access token",
        code="whatsapp_rejected",
        details=[{"field": field, "message": exc.message}],
    )


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


async def _by_id(bridge: WhatsAppBridge, token: str, number_id: str) -> dict[str, Any] | None:
    """The number with this Graph id; None when Graph knows no such object."""
    try:
        info = await bridge.graph.phone_number(token, number_id)
    except GraphError as exc:
        if exc.status == 400 and exc.code == 100:
            return None
        raise _rejected(exc, "phoneNumber") from None
    return info if str(info.get("id")) == number_id else None


async def _by_number(
    bridge: WhatsAppBridge, token: str, account: str, phone_number: str
) -> dict[str, Any]:
    """The account's number whose ``display_phone_number`` has these digits."""
    try:
        numbers = await bridge.graph.phone_numbers(token, account)
    except GraphError as exc:
        field = "businessAccountId" if exc.status == 400 and exc.code == 100 else "phoneNumber"
        raise _rejected(exc, field) from None
    wanted = _digits(phone_number)
    for number in numbers:
        if wanted and _digits(str(number.get("display_phone_number") or "")) == wanted:
            return number
    shown = [str(n.get("display_phone_number")) for n in numbers if n.get("display_phone_number")]
    has = ", ".join(shown[:20]) + (f" and {len(shown) - 20} more" if len(shown) > 20 else "")
    raise ValidationFailed(
        "That phone number is not a number of this WhatsApp Business Account",
        code="whatsapp_unknown_number",
        details=[{"field": "phoneNumber",
                  "message": f"not a number of the account; it has: {has or 'no numbers'}"}],
    )  # fmt: skip


async def _resolve(bridge: WhatsAppBridge, req: ConnectWhatsAppRequest) -> dict[str, Any]:
    """``{id, display_phone_number, verified_name}`` of the number the request names."""
    token = req.access_token
    if req.phone_number_id is not None:
        info = await _by_id(bridge, token, req.phone_number_id)
        if info is None:
            raise ValidationFailed(
                "WhatsApp refused the phone number id",
                code="whatsapp_rejected",
                details=[{"field": "phoneNumberId", "message": "not a phone number id"}],
            )
        return info
    if req.phone_number is None:
        missing = "phoneNumber or phoneNumberId is required"
        raise ValidationFailed(
            "Validation failed", details=[{"field": "phoneNumber", "message": missing}]
        )
    if req.phone_number.isdigit():  # an id as before, else a number written without spaces
        info = await _by_id(bridge, token, req.phone_number)
        if info is not None:
            return info
    return await _by_number(bridge, token, req.business_account_id, req.phone_number)


async def connect_whatsapp(
    svc: Services, caller: Caller, req: ConnectWhatsAppRequest, webhook_url: str
) -> ConnectWhatsAppResult:
    """Resolve and check the number and token with the Graph API, then store the token
    encrypted."""
    caller.require(Permission.SYNC_WHATSAPP)
    bridge = _configured(svc)
    info = await _resolve(bridge, req)
    number_id = str(info["id"])
    display = info.get("display_phone_number")
    verified = info.get("verified_name")
    await svc.store.whatsapp.connect(
        caller.user_id,
        bridge.box.encrypt(req.access_token, token_aad(caller.user_id)),
        {
            "phoneNumberId": number_id,
            "businessAccountId": req.business_account_id,
            "displayPhoneNumber": display,
            "verifiedName": verified,
        },
    )
    assert svc.settings.whatsapp_verify_token is not None
    return ConnectWhatsAppResult(
        status="connected",
        webhook_url=svc.settings.whatsapp_webhook_url or webhook_url,
        verification_code=svc.settings.whatsapp_verify_token,
        display_phone_number=str(display) if display else None,
        verified_name=str(verified) if verified else None,
    )


async def disconnect_whatsapp(svc: Services, caller: Caller) -> None:
    """Forget the token. Idempotent; the threads and their messages stay."""
    caller.require(Permission.SYNC_WHATSAPP)
    await svc.store.whatsapp.disconnect(caller.user_id)


async def sync_status(svc: Services, caller: Caller) -> SyncStatus:
    caller.require(Permission.SYNC_WHATSAPP)
    row = await svc.store.whatsapp.sync_row(caller.user_id)
    jobs = await svc.store.whatsapp.job_summary(caller.user_id, KINDS)
    provider = ProviderStatus(
        name="whatsapp",
        status="disconnected",
        last_sync=row.last_sync_at if row else None,
        pending_jobs=jobs.pending,
        failed_jobs=jobs.failed,
    )
    if row is not None and row.is_enabled:
        provider.status = "connected"
        if jobs.failed or row.sync_status == "error":
            provider.status = "error"
            provider.error_message = jobs.last_error or "WhatsApp refused the access token"
    if jobs.next_run is not None:
        provider.next_sync = jobs.next_run
    return SyncStatus(providers=[provider])


async def force_sync(svc: Services, caller: Caller, req: ForceSyncRequest) -> ForceSyncResult:
    """Queue the user's failed WhatsApp jobs again (``JobStore.redrive``)."""
    caller.require(Permission.SYNC_WHATSAPP)
    if await svc.store.whatsapp.connection(caller.user_id) is None:
        raise Conflict("WhatsApp is not connected", code="whatsapp_not_connected")
    kinds = {
        "push": [OUTBOUND],
        "pull": [INBOUND, MEDIA],
        "both": list(KINDS),
    }[req.direction]
    count = await svc.store.jobs.redrive(kinds, caller.user_id)
    if count:
        svc.wake_jobs()
    rate = max(svc.settings.whatsapp_send_rate, 0.05)
    return ForceSyncResult(
        sync_id=uuid4(),
        status="started",
        estimated_duration=math.ceil(count / rate) if count else 0,
        jobs=count,
    )
