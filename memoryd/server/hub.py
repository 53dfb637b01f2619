"""The connection hub of one node: which sockets belong to which user and device.

``publish`` is called after a transaction commits. It is synchronous and never awaits a
socket: each event is encoded at most once per codec (lazily, on first use) and queued on
every socket of that user, the sending device included. A slow socket is never waited
for: past its bounded queue it reads the rest from the event log, at its own pace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from memoryd.protocol.codec import Codec
from memoryd.protocol.errors import CloseCode
from memoryd.protocol.frames import EventFrame, Signal
from memoryd.protocol.models import Event

if TYPE_CHECKING:
    from memoryd.server.connection import Connection
    from memoryd.server.fanout import RedisFanout

log = logging.getLogger("memoryd.hub")


class OutboundEvent:
    """One committed event on its way out, encoded once per codec."""

    __slots__ = ("_encoded", "event", "published_at")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.published_at = time.perf_counter()
        self._encoded: dict[str, bytes] = {}

    @property
    def seq(self) -> int:
        return self.event.seq

    def encoded(self, codec: Codec) -> bytes:
        data = self._encoded.get(codec.name)
        if data is None:
            frame = EventFrame(seq=self.event.seq, event=self.event.type, data=self.event.data)
            data = self._encoded[codec.name] = codec.encode(frame)
        return data


class Hub:
    def __init__(self) -> None:
        self._by_user: dict[UUID, set[Connection]] = {}
        self._by_device: dict[UUID, Connection] = {}
        self.remote: RedisFanout | None = None  # cross-node fan-out, when REDIS_URL is set

    # -- membership ---------------------------------------------------------------------

    def add(self, conn: Connection) -> Connection | None:
        """Register ``conn``; return the connection of the same device it supersedes."""
        assert conn.user_id is not None and conn.device_id is not None
        previous = self._by_device.get(conn.device_id)
        self._by_device[conn.device_id] = conn
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        return previous if previous is not conn else None

    def remove(self, conn: Connection) -> None:
        if conn.user_id is None:
            return
        peers = self._by_user.get(conn.user_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_user[conn.user_id]
                if self.remote is not None:
                    self.remote.unwatch(conn.user_id)
        if conn.device_id is not None and self._by_device.get(conn.device_id) is conn:
            del self._by_device[conn.device_id]

    def count_for(self, user_id: UUID) -> int:
        return len(self._by_user.get(user_id, ()))

    def connections(self) -> list[Connection]:
        return [c for peers in self._by_user.values() for c in peers]

    def devices_of(self, user_id: UUID) -> list[Connection]:
        return list(self._by_user.get(user_id, ()))

    def local_users(self) -> list[UUID]:
        return list(self._by_user)

    def local_devices(self, user_id: UUID) -> list[UUID]:
        return [c.device_id for c in self._by_user.get(user_id, ()) if c.device_id is not None]

    def supersede_local(self, device_id: UUID) -> None:
        """Another node took this device: close our socket of it with 4011."""
        conn = self._by_device.get(device_id)
        if conn is not None:
            conn.close_soon(CloseCode.SUPERSEDED, "superseded by a newer connection")

    def catch_up_all(self) -> None:
        """Every local socket re-reads the log from where it is (after a Redis outage)."""
        for conn in self.connections():
            conn.kick()

    def catch_up_to(self, user_id: UUID, head: int) -> None:
        """The log has ``head`` for this user: sockets that are behind read up to it."""
        for conn in tuple(self._by_user.get(user_id, ())):
            if conn.cursor is not None and conn.cursor.last_seq < head:
                conn.kick()

    # -- delivery -----------------------------------------------------------------------

    def publish(self, user_id: UUID, events: Sequence[Event]) -> None:
        """EventSink: deliver committed events here, then to the user's other nodes."""
        self.deliver_local(user_id, events)
        if self.remote is not None:
            self.remote.publish_events(user_id, events)

    def deliver_local(self, user_id: UUID, events: Sequence[Event]) -> None:
        peers = self._by_user.get(user_id)
        if not peers:
            return
        for event in events:
            outbound = OutboundEvent(event)
            for conn in tuple(peers):
                conn.deliver_live(outbound)

    def signal(
        self, user_id: UUID, name: str, data: Any, *, exclude: Connection | None = None
    ) -> None:
        """Send an ephemeral signal to the user's sockets (never stored, never replayed)."""
        exclude_device = exclude.device_id if exclude is not None else None
        self.signal_local(user_id, name, data, exclude_device=exclude_device)
        if self.remote is not None:
            self.remote.publish_signal(user_id, name, data, exclude_device)

    def signal_local(
        self, user_id: UUID, name: str, data: Any, *, exclude_device: UUID | None
    ) -> None:
        peers = self._by_user.get(user_id)
        if not peers:
            return
        frame = Signal(signal=name, data=data)
        encoded: dict[str, bytes] = {}
        for conn in tuple(peers):
            if exclude_device is not None and conn.device_id == exclude_device:
                continue
            data_bytes = encoded.get(conn.codec.name)
            if data_bytes is None:
                data_bytes = encoded[conn.codec.name] = conn.codec.encode(frame)
            conn.push_signal(data_bytes, name)
