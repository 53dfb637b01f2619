"""The connection hub of one node: which sockets belong to which user and device.

The hub knows sockets and other nodes only through the two small protocols below, so it
imports nothing else of the server and is tested with fakes (tests/server/test_hub.py).
``publish`` is called after a transaction commits. It is synchronous and never awaits a
socket: each event is encoded at most once per codec (lazily, on first use) and queued on
every socket of that user, the sending device included, then handed to the `Peers` once.
A slow socket is never waited for: past its bounded queue it reads the rest from the
event log, at its own pace.

Chain of the server core, one way: ``sockets`` -> ``dispatch`` -> ``connection`` (->
``outbox``) and ``hub`` -> ``outbound``; ``fanout`` (`RedisFanout`, the Redis `Peers`)
-> ``hub``; ``app`` wires them (tests/server/test_import_graph.py keeps it acyclic).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

from memoryd.protocol.codec import Codec
from memoryd.protocol.errors import CloseCode
from memoryd.protocol.frames import Signal
from memoryd.protocol.models import Event
from memoryd.server.outbound import OutboundEvent

log = logging.getLogger("memoryd.hub")


class Socket(Protocol):
    """What the hub needs of a device session (`memoryd.server.connection.Connection`)."""

    @property
    def user_id(self) -> UUID | None: ...

    @property
    def device_id(self) -> UUID | None: ...

    @property
    def codec(self) -> Codec: ...

    def deliver_live(self, outbound: OutboundEvent) -> None:
        """A committed event, live: send it in order, or leave it to a catch-up."""

    def push_signal(self, data: bytes, name: str) -> None:
        """An encoded ephemeral signal: send it, or drop it when the socket is filling."""

    def kick(self, head: int | None = None) -> None:
        """The log holds events up to ``head`` (unknown: None): read them if behind."""

    def close_soon(self, code: int, reason: str) -> None:
        """Close with ``code`` without waiting for it."""

    async def close(self, code: int, reason: str) -> None: ...


class Peers(Protocol):
    """The other nodes serving the same users (`memoryd.server.fanout.RedisFanout`)."""

    def publish_events(self, user_id: UUID, events: Sequence[Event]) -> None: ...

    def publish_signal(
        self, user_id: UUID, name: str, data: Any, exclude_device: UUID | None
    ) -> None: ...

    def claim_device(self, user_id: UUID, device_id: UUID) -> None:
        """This device connected here: another node's socket of it goes (4011)."""

    async def watch(self, user_id: UUID) -> None:
        """The first socket of this user here: receive the user's traffic from now on."""

    def unwatch(self, user_id: UUID) -> None:
        """The last socket of this user here is gone."""

    async def set_presence(self, user_id: UUID, device_id: UUID, online: bool) -> None: ...

    async def online_devices(self, user_id: UUID) -> list[str] | None:
        """Device ids online on any node; None when the peers cannot say."""


class LocalPeers:
    """No other nodes (no ``REDIS_URL``): everything is this node's."""

    def publish_events(self, user_id: UUID, events: Sequence[Event]) -> None:
        return None

    def publish_signal(
        self, user_id: UUID, name: str, data: Any, exclude_device: UUID | None
    ) -> None:
        return None

    def claim_device(self, user_id: UUID, device_id: UUID) -> None:
        return None

    async def watch(self, user_id: UUID) -> None:
        return None

    def unwatch(self, user_id: UUID) -> None:
        return None

    async def set_presence(self, user_id: UUID, device_id: UUID, online: bool) -> None:
        return None

    async def online_devices(self, user_id: UUID) -> list[str] | None:
        return None


class Hub:
    def __init__(self, peers: Peers | None = None) -> None:
        self._by_user: dict[UUID, set[Socket]] = {}
        self._by_device: dict[UUID, Socket] = {}
        self.peers: Peers = peers if peers is not None else LocalPeers()
        # Told how long each publish took (`Metrics.send_stage`, stage "publish")
        self.observe: Callable[[str, float], None] | None = None

    # -- membership ---------------------------------------------------------------------

    def add(self, sock: Socket) -> Socket | None:
        """Register ``sock``; return the socket of the same device it supersedes."""
        user_id, device_id = sock.user_id, sock.device_id
        assert user_id is not None and device_id is not None
        previous = self._by_device.get(device_id)
        self._by_device[device_id] = sock
        self._by_user.setdefault(user_id, set()).add(sock)
        return previous if previous is not sock else None

    def remove(self, sock: Socket) -> None:
        user_id, device_id = sock.user_id, sock.device_id
        if user_id is None:
            return
        peers = self._by_user.get(user_id)
        if peers is not None:
            peers.discard(sock)
            if not peers:
                del self._by_user[user_id]
                self.peers.unwatch(user_id)
        if device_id is not None and self._by_device.get(device_id) is sock:
            del self._by_device[device_id]

    def sockets(self) -> list[Socket]:
        return [s for peers in self._by_user.values() for s in peers]

    def local_users(self) -> list[UUID]:
        return list(self._by_user)

    def local_devices(self, user_id: UUID) -> list[UUID]:
        return [s.device_id for s in self._by_user.get(user_id, ()) if s.device_id is not None]

    async def online_devices(self, user_id: UUID) -> set[str]:
        """Device ids of the user online on any node (this node's when the peers cannot
        say): the socket cap at ``hello`` and the ``presence`` request both ask this."""
        local = {str(d) for d in self.local_devices(user_id)}
        elsewhere = await self.peers.online_devices(user_id)
        return local if elsewhere is None else local | set(elsewhere)

    def supersede_local(self, device_id: UUID) -> None:
        """Another node took this device: close our socket of it with 4011."""
        sock = self._by_device.get(device_id)
        if sock is not None:
            sock.close_soon(CloseCode.SUPERSEDED, "superseded by a newer connection")

    def catch_up_all(self) -> None:
        """Every local socket re-reads the log from where it is (after a Redis outage)."""
        for sock in self.sockets():
            sock.kick()

    def catch_up_to(self, user_id: UUID, head: int) -> None:
        """The log has ``head`` for this user: sockets that are behind read up to it."""
        for sock in tuple(self._by_user.get(user_id, ())):
            sock.kick(head)

    # -- delivery -----------------------------------------------------------------------

    def publish(self, user_id: UUID, events: Sequence[Event]) -> None:
        """EventSink: deliver committed events here, then to the user's other nodes."""
        t0 = time.perf_counter()
        self.deliver_local(user_id, events)
        self.peers.publish_events(user_id, events)
        if self.observe is not None:
            self.observe("publish", time.perf_counter() - t0)

    def deliver_local(self, user_id: UUID, events: Sequence[Event]) -> None:
        peers = self._by_user.get(user_id)
        if not peers:
            return
        for event in events:
            outbound = OutboundEvent(event)
            for sock in tuple(peers):
                sock.deliver_live(outbound)

    def signal(
        self, user_id: UUID, name: str, data: Any, *, exclude_device: UUID | None = None
    ) -> None:
        """Send an ephemeral signal to the user's sockets (never stored, never replayed)."""
        self.signal_local(user_id, name, data, exclude_device=exclude_device)
        self.peers.publish_signal(user_id, name, data, exclude_device)

    def signal_local(
        self, user_id: UUID, name: str, data: Any, *, exclude_device: UUID | None
    ) -> None:
        peers = self._by_user.get(user_id)
        if not peers:
            return
        frame = Signal(signal=name, data=data)
        encoded: dict[str, bytes] = {}
        for sock in tuple(peers):
            if exclude_device is not None and sock.device_id == exclude_device:
                continue
            codec = sock.codec
            data_bytes = encoded.get(codec.name)
            if data_bytes is None:
                data_bytes = encoded[codec.name] = codec.encode(frame)
            sock.push_signal(data_bytes, name)
