"""The WhatsApp bridge by feature: ``webhook`` (Meta's handshake and signed deliveries),
``inbound`` (messages, media and statuses as jobs), ``outbound`` (the send planner and the
send job), ``connection`` (``/api/sync``: connect, status, disconnect, force) and
``shared``. See docs/whatsapp.md."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from memoryd.handlers.context import Services
from memoryd.handlers.whatsapp.inbound import fetch_media, process_inbound
from memoryd.handlers.whatsapp.outbound import deliver_outbound, plan_outbound
from memoryd.handlers.whatsapp.shared import INBOUND, KINDS, MEDIA, OUTBOUND, token_aad
from memoryd.handlers.whatsapp.webhook import receive_webhook, verify_subscription
from memoryd.protocol.whatsapp import WebhookReceipt
from memoryd.storage.jobs import Job

__all__ = [
    "INBOUND",
    "KINDS",
    "MEDIA",
    "OUTBOUND",
    "WebhookReceipt",
    "job_handlers",
    "plan_outbound",
    "receive_webhook",
    "token_aad",
    "verify_subscription",
]


def job_handlers(svc: Services) -> dict[str, Callable[[Job], Awaitable[Any]]]:
    """The job kinds this module runs, bound to ``svc`` (for `JobRunner.register`)."""

    async def inbound(job: Job) -> Any:
        return await process_inbound(svc, job)

    async def outbound(job: Job) -> Any:
        return await deliver_outbound(svc, job)

    async def media(job: Job) -> Any:
        return await fetch_media(svc, job)

    return {INBOUND: inbound, OUTBOUND: outbound, MEDIA: media}
