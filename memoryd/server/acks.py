"""Device acks are cumulative and frequent: keep the newest per device, write in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

from memoryd.storage.devices import DeviceStore

log = logging.getLogger("memoryd.acks")


class AckWriter:
    def __init__(self, devices: DeviceStore, interval: float) -> None:
        self._devices = devices
        self._interval = interval
        self._pending: dict[UUID, tuple[UUID, int]] = {}  # device -> (user, seq)
        self._task: asyncio.Task[None] | None = None

    def record(self, user_id: UUID, device_id: UUID, seq: int) -> None:
        current = self._pending.get(device_id)
        if current is None or seq > current[1]:
            self._pending[device_id] = (user_id, seq)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memoryd-ack-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._devices.save_acks([(u, d, s) for d, (u, s) in batch.items()])
        except Exception:
            log.exception(
                "could not save %d device acks; keeping them for the next flush", len(batch)
            )
            for device, (user, seq) in batch.items():
                self.record(user, device, seq)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
