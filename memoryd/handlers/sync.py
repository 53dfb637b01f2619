"""/api/sync: connect and disconnect WhatsApp, the status of each provider, force a sync.

Shapes follow the seed plan's ``SyncStatusResponse``, ``WhatsAppConnectRequest`` /
``WhatsAppConnectResponse`` and ``ForceSyncRequest`` / ``ForceSyncResponse``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.bridges.whatsapp import GraphError, WhatsAppBridge
from memoryd.errors import ClientError, Conflict, Unavailable, ValidationFailed
from memoryd.handlers import whatsapp
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.rbac import Permission

GraphId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{1,32}$",
        extra={"message": "must be a Graph API id (digits)"},
    ),
]


class ConnectWhatsAppRequest(msgspec.Struct, rename="camel", kw_only=True):
    """``phoneNumber`` is the **phone number id** Meta shows under WhatsApp > API Setup,
    not the phone number itself."""

    phone_number: GraphId
    business_account_id: GraphId
    access_token: Annotated[str, msgspec.Meta(min_length=8, max_length=4096)]


class ConnectWhatsAppResult(msgspec.Struct, rename="camel", kw_only=True):
    """Point Meta's webhook at ``webhookUrl`` with ``verificationCode`` as its verify
    token, subscribed to the ``messages`` field."""

    status: Literal["connected", "pending", "failed"]
    webhook_url: str
    verification_code: str
    display_phone_number: str | None = None
    verified_name: str | None = None


class ProviderStatus(msgspec.Struct, rename="camel", kw_only=True):
    """``error``: a job failed for good (``errorMessage`` says why; ``POST /api/sync/force``
    retries it) or the token was refused. ``nextSync``: when the next retry is due."""

    name: str
    status: Literal["connected", "disconnected", "error"]
    last_sync: datetime | None
    next_sync: datetime | UnsetType = UNSET
    error_message: str | UnsetType = UNSET
    pending_jobs: int = 0
    failed_jobs: int = 0


class SyncStatus(msgspec.Struct, rename="camel", kw_only=True):
    providers: list[ProviderStatus]


Direction = Annotated[
    str,
    msgspec.Meta(pattern="^(push|pull|both)$", extra={"message": "must be push, pull or both"}),
]
Provider = Annotated[str, msgspec.Meta(pattern="^whatsapp$", extra={"message": "must be whatsapp"})]


class ForceSyncRequest(msgspec.Struct, rename="camel", kw_only=True):
    """``push``: re-drive failed sends; ``pull``: failed inbound messages and statuses."""

    provider: Provider | None = None
    direction: Direction = "both"


class ForceSyncResult(msgspec.Struct, rename="camel", kw_only=True):
    """``jobs``: how many failed jobs were queued again; ``estimatedDuration`` in seconds."""

    sync_id: UUID
    status: Literal["started", "failed"]
    estimated_duration: int
    jobs: int


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


async def connect_whatsapp(
    svc: Services, caller: Caller, req: ConnectWhatsAppRequest, webhook_url: str
) -> ConnectWhatsAppResult:
    """Check the number and token with the Graph API, then store the token encrypted."""
    caller.require(Permission.SYNC_WHATSAPP)
    bridge = _configured(svc)
    try:
        info = await bridge.graph.phone_number(req.access_token, req.phone_number)
    except GraphError as exc:
        if exc.transient:
            raise WhatsAppUnavailable(f"The Graph API could not be reached: {exc}") from None
        field = "accessToken" if exc.code == 190 or exc.status == 401 else "phoneNumber"
        raise ValidationFailed(
            "WhatsApp refused the phone number id or the access token",
            code="whatsapp_rejected",
            details=[{"field": field, "message": exc.message}],
        ) from None
    if str(info.get("id")) != req.phone_number:
        raise ValidationFailed(
            "WhatsApp refused the phone number id",
            code="whatsapp_rejected",
            details=[{"field": "phoneNumber", "message": "not a phone number id"}],
        )
    display = info.get("display_phone_number")
    verified = info.get("verified_name")
    await svc.store.whatsapp.connect(
        caller.user_id,
        bridge.box.encrypt(req.access_token, whatsapp.token_aad(caller.user_id)),
        {
            "phoneNumberId": req.phone_number,
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
    jobs = await svc.store.whatsapp.job_summary(caller.user_id, whatsapp.KINDS)
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
        "push": [whatsapp.OUTBOUND],
        "pull": [whatsapp.INBOUND, whatsapp.MEDIA],
        "both": list(whatsapp.KINDS),
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
