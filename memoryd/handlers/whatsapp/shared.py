"""What the WhatsApp handlers share: the job kinds, the thread's category, the token's
associated data, retry delays, the bridge and the stored token."""

from __future__ import annotations

import hashlib
import logging
import random
from typing import Any
from uuid import UUID

from memoryd.bridges.whatsapp import WhatsAppBridge
from memoryd.crypto import DecryptionFailed
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import RetryLater

log = logging.getLogger("memoryd.whatsapp")

INBOUND = "whatsapp.inbound"
OUTBOUND = "whatsapp.outbound"
MEDIA = "whatsapp.media"  # an inbound message's media, fetched after the message is stored
KINDS = (INBOUND, OUTBOUND, MEDIA)
CATEGORY = ("WhatsApp", "message-circle", "#25D366")


def token_aad(user_id: UUID) -> bytes:
    """Associated data binding a stored access token to its owner and provider."""
    return f"whatsapp:{user_id}".encode()


def retry_delay(bridge: WhatsAppBridge, attempts: int, hint: float | None = None) -> float:
    if hint is not None and hint >= 0:
        return min(300.0, hint)
    return random.uniform(0.5, 1.0) * min(300.0, bridge.retry_base * 2.0 ** max(0, attempts - 1))


def dedupe_key(prefix: str, *parts: str) -> str:
    key = ":".join((prefix, *parts))
    if len(key) <= 200:
        return key
    return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def bridge_of(svc: Services) -> WhatsAppBridge:
    if svc.whatsapp is None:  # the runner registers these kinds only when it is configured
        raise RetryLater("WhatsApp is not configured on this node", 60.0)
    return svc.whatsapp


def decrypt(bridge: WhatsAppBridge, ciphertext: str, user_id: UUID) -> str | None:
    try:
        return bridge.box.decrypt(ciphertext, token_aad(user_id))
    except DecryptionFailed:
        log.error("stored WhatsApp token does not decrypt (MEMORYD_SECRET_KEY changed?)")
        return None
