"""The hub with fake sockets and fake peers: events and signals in, encoded frames out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import redis.asyncio as redis_asyncio

from memoryd.protocol.codec import JSON, MSGPACK, Codec
from memoryd.protocol.models import Event
from memoryd.server.fanout import ClaimEnvelope, EventsEnvelope, RedisFanout, SignalEnvelope
from memoryd.server.hub import Hub, LocalPeers, Peers, Socket
from memoryd.server.metrics import Metrics
from memoryd.server.outbound import OutboundEvent

AT = datetime(2026, 1, 1, tzinfo=UTC)


class FakeSocket:
    def __init__(self, user: UUID, codec: Codec = JSON, last_seq: int = 0) -> None:
        self.user_id: UUID | None = user
        self.device_id: UUID | None = uuid.uuid4()
        self.codec = codec
        self.last_seq = last_seq
        self.live: list[OutboundEvent] = []
        self.frames: list[bytes] = []
        self.signals: list[str] = []
        self.kicks: list[int | None] = []
        self.closed: list[int] = []

    def deliver_live(self, outbound: OutboundEvent) -> None:
        self.live.append(outbound)
        self.frames.append(outbound.encoded(self.codec))

    def push_signal(self, data: bytes, name: str) -> None:
        self.frames.append(data)
        self.signals.append(name)

    def kick(self, head: int | None = None) -> None:
        self.kicks.append(head)

    def close_soon(self, code: int, reason: str) -> None:
        self.closed.append(code)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append(code)


class FakePeers:
    def __init__(self, online: list[str] | None = None) -> None:
        self.published: list[tuple[UUID, list[int]]] = []
        self.signals: list[tuple[UUID, str, UUID | None]] = []
        self.unwatched: list[UUID] = []
        self.online = online

    def publish_events(self, user_id: UUID, events: Sequence[Event]) -> None:
        self.published.append((user_id, [e.seq for e in events]))

    def publish_signal(
        self, user_id: UUID, name: str, data: Any, exclude_device: UUID | None
    ) -> None:
        self.signals.append((user_id, name, exclude_device))

    def claim_device(self, user_id: UUID, device_id: UUID) -> None: ...

    async def watch(self, user_id: UUID) -> None: ...

    def unwatch(self, user_id: UUID) -> None:
        self.unwatched.append(user_id)

    async def set_presence(self, user_id: UUID, device_id: UUID, online: bool) -> None: ...

    async def online_devices(self, user_id: UUID) -> list[str] | None:
        return self.online


def event(seq: int, text: str = "x") -> Event:
    return Event(seq=seq, type="message.created", data={"content": text}, created_at=AT)


def test_the_fakes_are_what_the_hub_asks_for() -> None:
    sock: Socket = FakeSocket(uuid.uuid4())
    peers: Peers = FakePeers()
    local: Peers = LocalPeers()
    assert sock and peers and local


def test_publish_reaches_every_socket_of_the_user_encoded_once_per_codec() -> None:
    peers = FakePeers()
    hub = Hub(peers)
    user, other = uuid.uuid4(), uuid.uuid4()
    a, b, c = FakeSocket(user), FakeSocket(user), FakeSocket(user, MSGPACK)
    stranger = FakeSocket(other)
    for s in (a, b, c, stranger):
        assert hub.add(s) is None
    hub.publish(user, [event(1, "hi"), event(2)])
    assert [o.seq for o in a.live] == [o.seq for o in c.live] == [1, 2]
    assert a.frames[0] is b.frames[0]  # one encoding shared by the JSON sockets
    assert msgspec.json.decode(a.frames[0]) == {
        "type": "event",
        "seq": 1,
        "event": "message.created",
        "data": {"content": "hi"},
    }
    assert msgspec.msgpack.decode(c.frames[0]) == msgspec.json.decode(a.frames[0])
    assert stranger.live == []
    assert peers.published == [(user, [1, 2])]  # and once to the other nodes


def test_a_signal_skips_the_device_that_caused_it() -> None:
    peers = FakePeers()
    hub = Hub(peers)
    user = uuid.uuid4()
    a, b = FakeSocket(user), FakeSocket(user)
    hub.add(a), hub.add(b)
    hub.signal(user, "typing", {"memoryId": "m"}, exclude_device=a.device_id)
    assert (a.signals, b.signals) == ([], ["typing"])
    assert msgspec.json.decode(b.frames[0]) == {
        "type": "signal",
        "signal": "typing",
        "data": {"memoryId": "m"},
    }
    assert peers.signals == [(user, "typing", a.device_id)]


def test_a_device_reconnecting_supersedes_its_old_socket() -> None:
    peers = FakePeers()
    hub = Hub(peers)
    user = uuid.uuid4()
    old, new = FakeSocket(user), FakeSocket(user)
    new.device_id = old.device_id
    hub.add(old)
    assert hub.add(new) is old
    hub.remove(old)  # the old socket's handler ends after the new one registered
    hub.publish(user, [event(1)])
    assert (len(old.live), len(new.live)) == (0, 1)
    assert peers.unwatched == []  # the user still has a socket here
    hub.remove(new)
    assert peers.unwatched == [user] and hub.local_users() == []


def test_another_node_taking_the_device_closes_ours_with_4011() -> None:
    hub = Hub()
    sock = FakeSocket(uuid.uuid4())
    hub.add(sock)
    assert sock.device_id is not None
    hub.supersede_local(uuid.uuid4())
    hub.supersede_local(sock.device_id)
    assert sock.closed == [4011]


def test_catch_up_kicks_the_users_sockets_with_the_head() -> None:
    hub = Hub()
    user = uuid.uuid4()
    a, b = FakeSocket(user), FakeSocket(uuid.uuid4())
    hub.add(a), hub.add(b)
    hub.catch_up_to(user, 7)
    assert (a.kicks, b.kicks) == ([7], [])
    hub.catch_up_all()
    assert (a.kicks, b.kicks) == ([7, None], [None])


async def test_online_devices_are_this_nodes_plus_what_the_peers_say() -> None:
    user = uuid.uuid4()
    sock = FakeSocket(user)
    here = str(sock.device_id)
    alone = Hub()  # LocalPeers: no other node, this node's devices
    alone.add(sock)
    assert await alone.online_devices(user) == {here}
    blind = Hub(FakePeers(online=None))  # Redis cannot say: this node's devices
    blind.add(sock)
    assert await blind.online_devices(user) == {here}
    shared = Hub(FakePeers(online=["elsewhere", here]))
    shared.add(sock)
    assert await shared.online_devices(user) == {here, "elsewhere"}


def test_envelopes_from_other_nodes_reach_the_hub() -> None:
    hub = Hub()
    fanout = RedisFanout(redis_asyncio.Redis(), hub, events=None, metrics=Metrics())  # type: ignore[arg-type]
    user = uuid.uuid4()
    sock, mine = FakeSocket(user), FakeSocket(user)
    hub.add(sock), hub.add(mine)
    assert mine.device_id is not None and sock.device_id is not None
    encode = msgspec.msgpack.encode

    def deliver(envelope: Any) -> None:
        channel = f"memoryd:user:{user}".encode()
        fanout._on_message({"type": "message", "channel": channel, "data": encode(envelope)})

    deliver(EventsEnvelope(node="other", user=user, events=[(1, "message.created", {"a": 1})]))
    deliver(EventsEnvelope(node=fanout.node_id, user=user, events=[(2, "x", None)]))  # own: skip
    deliver(SignalEnvelope(node="other", user=user, signal="typing", exclude_device=mine.device_id))
    deliver(ClaimEnvelope(node="other", user=user, device=sock.device_id))
    fanout._on_message({"type": "message", "channel": b"c", "data": b"\x93junk"})  # ignored
    assert [(o.seq, o.event.data) for o in sock.live] == [(1, {"a": 1})]
    assert (sock.signals, mine.signals) == (["typing"], [])
    assert (sock.closed, mine.closed) == ([4011], [])
    # The wire shape: a tagged array, [kind, node, user, ...].
    wire = msgspec.msgpack.decode(encode(ClaimEnvelope(node="n", user=user, device=user)))
    assert wire == ["claim", "n", str(user), str(user)]
