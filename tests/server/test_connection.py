"""One device session with fakes around it: a fake WebSocket and transport, an in-memory
event log, a recording ack sink. Events in, the exact frames on the wire out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from memoryd.config import Settings
from memoryd.handlers.context import Caller
from memoryd.protocol import frames as f
from memoryd.protocol.codec import JSON
from memoryd.protocol.delivery import DeliveryCursor
from memoryd.protocol.models import Event
from memoryd.server.connection import Connection, SessionEnv
from memoryd.server.metrics import Metrics
from memoryd.server.outbound import OutboundEvent
from memoryd.server.outbox import Outbox

AT = datetime(2026, 1, 1, tzinfo=UTC)


class FakeTransport:
    """Where the outbox's own writes go: the frames are parsed back (RFC 6455 headers of
    server frames) into the socket's ``sent``, and ``writes`` counts the ``send`` calls."""

    def __init__(self, ws: FakeWebSocket) -> None:
        self.ws = ws
        self.buffered = 0  # bytes the kernel has not taken: >0 makes frames wait in the queue
        self.aborted = False
        self.broken = False  # the peer is gone: every write fails
        self.writes = 0

    def write(self, data: bytes) -> None:
        if self.broken:
            raise ConnectionResetError
        self.writes += 1
        view = memoryview(data)
        while view:
            assert view[0] & 0x80 and not view[1] & 0x80  # final, unmasked
            length, start = view[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(view[2:4]), 4
            elif length == 127:
                length, start = int.from_bytes(view[2:10]), 10
            self.ws.sent.append(bytes(view[start : start + length]))
            view = view[start + length :]

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed_with: tuple[int, bytes] | None = None
        self.closed = False
        self.gate = asyncio.Event()  # the writer task's sends wait for it (a slow peer)
        self.gate.set()

    async def send_frame(self, data: bytes, opcode: Any) -> None:
        """The writer task's path (the outbox's queue), gated like a slow peer."""
        if not self.gate.is_set():
            await self.gate.wait()
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed_with = (code, message)
        self.closed = True

    def frames(self) -> list[Any]:
        return [msgspec.json.decode(d) for d in self.sent]

    def seqs(self) -> list[int]:
        return [fr["seq"] for fr in self.frames() if fr["type"] == "event"]


class MemoryLog:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reads = 0

    def append(self, *seqs: int) -> list[Event]:
        new = [Event(seq=s, type="message.created", data={"n": s}, created_at=AT) for s in seqs]
        self.events += new
        return new

    async def get_after(self, user_id: UUID, after_seq: int, limit: int) -> Sequence[Event]:
        self.reads += 1
        return [e for e in self.events if e.seq > after_seq][:limit]


class Acks:
    def __init__(self) -> None:
        self.recorded: list[int] = []

    def record(self, user_id: UUID, device_id: UUID, seq: int) -> None:
        self.recorded.append(seq)


class Node:
    """A fake node: the session's environment, with the tasks it spawned."""

    def __init__(self, **settings: Any) -> None:
        self.log = MemoryLog()
        self.acks = Acks()
        self.tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics()
        self.env = SessionEnv(
            Settings(data_dir=Path("/nonexistent")).replace(**settings),
            self.log,
            self.metrics,
            self.acks,
            self.spawn,
        )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(coro))

    def session(self, last_seq: int = 0) -> tuple[Connection, FakeWebSocket, FakeTransport]:
        ws = FakeWebSocket()
        transport = FakeTransport(ws)
        conn = Connection(self.env, ws, transport, JSON)  # type: ignore[arg-type]
        conn.caller = Caller(uuid.uuid4(), "a@b.c", "user", frozenset(), device_id=uuid.uuid4())
        conn.send(f.Reply(id=1, data={"hello": True}), "reply")
        conn.start(DeliveryCursor[OutboundEvent](last_seq, buffer_limit=conn.max_queue))
        return conn, ws, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_replay_then_live_in_order_each_once() -> None:
    node = Node()
    node.log.append(1, 2, 3)
    conn, ws, _ = node.session(last_seq=1)
    live = [OutboundEvent(e) for e in node.log.append(4)]
    conn.deliver_live(live[0])  # arrives while the replay runs: held, not sent twice
    await settle()
    assert ws.frames()[0] == {"type": "reply", "id": 1, "data": {"hello": True}}
    assert ws.seqs() == [2, 3, 4]
    for e in node.log.append(5):
        conn.deliver_live(OutboundEvent(e))
    conn.deliver_live(OutboundEvent(node.log.events[3]))  # a duplicate publish
    await asyncio.sleep(0)  # written at the end of this loop step, without a task switch
    assert ws.seqs() == [2, 3, 4, 5]
    await conn.cleanup()


async def test_a_live_gap_is_filled_from_the_log() -> None:
    node = Node()
    conn, ws, _ = node.session()
    await settle()
    node.log.append(1, 2, 3)
    conn.deliver_live(OutboundEvent(node.log.events[2]))  # 1 and 2 never came live
    await settle()
    assert ws.seqs() == [1, 2, 3]
    await conn.cleanup()


async def test_kick_reads_the_log_only_when_behind() -> None:
    node = Node()
    node.log.append(1)
    conn, ws, _ = node.session()
    await settle()
    reads = node.log.reads
    conn.kick(1)  # the poller says head 1: we have it
    await settle()
    assert node.log.reads == reads
    node.log.append(2)
    conn.kick(2)
    await settle()
    assert ws.seqs() == [1, 2]
    await conn.cleanup()


async def test_a_full_queue_leaves_events_in_the_log_and_drops_signals_first() -> None:
    node = Node(ws_max_queue=16, ws_stall_timeout=30.0)
    conn, ws, transport = node.session()
    await settle()
    transport.buffered = 1  # the kernel is full: frames go through the queue
    ws.gate.clear()  # and the peer reads nothing for now
    events = [OutboundEvent(e) for e in node.log.append(*range(1, 41))]
    for outbound in events:
        conn.deliver_live(outbound)
    conn.push_signal(JSON.encode(f.Signal(signal="typing", data=None)), "typing")
    await settle()
    assert len(ws.sent) <= 1  # nothing more went out while the peer was stuck
    assert node.metrics.ws_queue_drops._value.get() == 1  # the signal, not an event
    transport.buffered = 0
    ws.gate.set()  # the peer reads again: everything arrives, from the log where needed
    for _ in range(50):
        await settle()
        if ws.seqs()[-1:] == [40]:
            break
    assert ws.seqs() == list(range(1, 41))
    assert ws.closed_with is None
    await conn.cleanup()


async def test_a_peer_that_takes_nothing_is_closed_with_4009() -> None:
    node = Node(ws_max_queue=16)
    conn, ws, transport = node.session()
    await settle()
    transport.buffered = 1
    ws.gate.clear()
    for n in range(2 * 16 + 2):  # answers to requests the client never reads
        conn.send(f.Reply(id=n, data=None), "reply")
    await asyncio.gather(*node.tasks)
    assert ws.closed_with == (4009, b"slow consumer")
    assert node.metrics.ws_slow_consumer_closes._value.get() == 1
    await conn.cleanup()


async def test_acks_are_recorded_never_beyond_what_was_sent() -> None:
    node = Node()
    node.log.append(1, 2, 3)
    conn, _, _ = node.session()
    await settle()
    conn.on_ack(2)
    conn.on_ack(1)  # cumulative: an older ack changes nothing
    conn.on_ack(99)
    assert node.acks.recorded == [2, 3]
    await conn.cleanup()


class RecordingOutbox(Outbox):
    """An outbox alone, as the session sees it: a failed write is reported, not hidden."""

    def __init__(self, ws: FakeWebSocket, transport: FakeTransport) -> None:
        super().__init__(ws, transport, binary=False, max_queue=16, metrics=Metrics())  # type: ignore[arg-type]
        self.failures = 0

    def write_failed(self) -> None:
        self.failures += 1


async def test_the_outbox_writes_at_once_and_queues_only_when_the_transport_is_busy() -> None:
    ws = FakeWebSocket()
    transport = FakeTransport(ws)
    box = RecordingOutbox(ws, transport)
    box.push_frame(b'"a"', "event", 0.0)
    box.push_frame(b'"b"' * 100, "reply", 0.0)  # the same loop step: one send for both
    assert ws.sent == [] and box._writer is None  # no task for an idle socket
    await asyncio.sleep(0)
    assert ws.sent == [b'"a"', b'"b"' * 100] and transport.writes == 1
    ws.sent.clear()
    box.push_frame(b'"a"', "event", 0.0)
    transport.buffered = 1
    for n in range(8):
        box.push_frame(b"%d" % n, "event", 0.0)
    assert box.queued() == 8 and box.filling() and box.room() == 8
    transport.buffered = 0
    await box.flush(5.0)
    assert ws.sent == [b'"a"', *(b"%d" % n for n in range(8))] and box.queued() == 0
    assert await box.wait_for_room(0.01)

    transport.broken = True
    box.push_frame(b"lost", "event", 0.0)
    await asyncio.sleep(0)
    assert box.failures == 1
    await box.stop_writer()


async def test_a_failed_write_closes_the_session_with_1001() -> None:
    node = Node()
    conn, ws, transport = node.session()
    await settle()
    transport.broken = True
    conn.send(f.Reply(id=2, data=None), "reply")
    await asyncio.sleep(0)  # the write, at the end of the step
    await asyncio.gather(*node.tasks)
    assert ws.closed_with == (1001, b"write failed")
    await conn.cleanup()
