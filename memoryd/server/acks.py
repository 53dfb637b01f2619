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
        self._writing: list[dict[UUID, tuple[UUID, int]]] = []  # batches being saved
        self._task: asyncio.Task[None] | None = None

    def record(self, user_id: UUID, device_id: UUID, seq: int) -> None:
        current = self._pending.get(device_id)
        if current is None or seq > current[1]:
            self._pending[device_id] = (user_id, seq)

    def newest(self, device_id: UUID) -> int:
        """The device's newest ack not yet in the database (0 when none): a reconnecting
        device must resume from it, not from the older stored one."""
        entries = (b.get(device_id) for b in (self._pending, *self._writing))
        return max((entry[1] for entry in entries if entry is not None), default=0)

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
        self._writing.append(batch)
        try:
            await self._devices.save_acks([(u, d, s) for d, (u, s) in batch.items()])
        except Exception:
            log.exception(
                "could not save %d device acks; keeping them for the next flush", len(batch)
            )
            for device, (user, seq) in batch.items():
                self.record(user, device, seq)
        finally:
            self._writing.remove(batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()
