"""Background upkeep of one node: pruning the event log past its retention."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from memoryd.config import Settings
from memoryd.storage.events import EventStore

log = logging.getLogger("memoryd.maintenance")

PRUNE_INTERVAL = 3600.0


async def prune_events(events: EventStore, settings: Settings) -> None:
    """Delete events older than the retention; devices resuming from before get ``resync``."""
    retention = timedelta(days=settings.event_retention_days)
    while True:
        try:
            cutoff = datetime.now(UTC) - retention
            while (deleted := await events.prune(cutoff)) > 0:
                log.info("pruned %d events older than %s", deleted, cutoff.isoformat())
        except Exception:
            log.exception("event pruning failed; trying again later")
        await asyncio.sleep(PRUNE_INTERVAL)
