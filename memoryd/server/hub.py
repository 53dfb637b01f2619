"""The connection hub of one node: which sockets belong to which user and device.

``publish`` is called after a transaction commits. It is synchronous and never awaits a
socket: each event is encoded at most once per codec (lazily, on first use) and queued on
every socket of that user, the sending device included. Slow sockets are closed by their
own bounded queue, never waited for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from memoryd.protocol.codec import Codec
from memoryd.protocol.frames import EventFrame, Signal
from memoryd.protocol.models import Event

if TYPE_CHECKING:
    from memoryd.server.connection import Connection

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
        if conn.device_id is not None and self._by_device.get(conn.device_id) is conn:
            del self._by_device[conn.device_id]

    def count_for(self, user_id: UUID) -> int:
        return len(self._by_user.get(user_id, ()))

    def connections(self) -> list[Connection]:
        return [c for peers in self._by_user.values() for c in peers]

    def devices_of(self, user_id: UUID) -> list[Connection]:
        return list(self._by_user.get(user_id, ()))

    # -- delivery -----------------------------------------------------------------------

    def publish(self, user_id: UUID, events: Sequence[Event]) -> None:
        """EventSink: deliver committed events to every local socket of the user."""
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
        peers = self._by_user.get(user_id)
        if not peers:
            return
        frame = Signal(signal=name, data=data)
        encoded: dict[str, bytes] = {}
        for conn in tuple(peers):
            if conn is exclude:
                continue
            data_bytes = encoded.get(conn.codec.name)
            if data_bytes is None:
                data_bytes = encoded[conn.codec.name] = conn.codec.encode(frame)
            conn.push_signal(data_bytes, name)
