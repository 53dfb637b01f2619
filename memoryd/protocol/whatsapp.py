"""The bodies of ``/api/sync/*`` (the seed's ``SyncStatusResponse``,
``WhatsAppConnectRequest`` / ``WhatsAppConnectResponse``, ``ForceSyncRequest`` /
``ForceSyncResponse``) and the answer to a WhatsApp webhook delivery."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.protocol.models import AwareDatetime

GraphId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{1,32}$",
        extra={"message": "must be a Graph API id (digits)"},
    ),
]


PhoneNumber = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^\+?[0-9][0-9 ().\-]{0,40}$",
        extra={"message": "must be a phone number or a Graph API phone number id"},
    ),
]


class ConnectWhatsAppRequest(msgspec.Struct, rename="camel", kw_only=True):
    """``phoneNumber`` is the business phone number in any common formatting
    (``+1 555-078-3881``), resolved among the numbers of ``businessAccountId``, or the
    **phone number id** Meta shows under WhatsApp > API Setup. ``phoneNumberId`` names
    the id explicitly (then ``phoneNumber`` may be left out)."""

    business_account_id: GraphId
    access_token: Annotated[str, msgspec.Meta(min_length=8, max_length=4096)]
    phone_number: PhoneNumber | None = None
    phone_number_id: GraphId | None = None


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
    last_sync: AwareDatetime | None
    next_sync: AwareDatetime | UnsetType = UNSET
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


class WebhookReceipt(msgspec.Struct, kw_only=True):
    """What a webhook delivery became: items stored now, already stored, or ignored
    (an unknown phone number id, an unsupported change)."""

    received: int
    stored: int
    duplicates: int
    ignored: int
