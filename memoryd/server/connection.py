"""One device session over one WebSocket: bounded outbound queue, writer, catch-up.

Live events come from the hub (``deliver_live``), replayed ones from the event log
(``_catch_up``); a `DeliveryCursor` keeps them gap-free, in order and without duplicates.
Nothing here awaits a slow peer on the fan-out path: ``push`` is synchronous. A live
event that finds the queue full stays in the event log and is replayed as the socket
drains; a socket whose queue stays at least half full for ``ws_stall_timeout`` is closed
with 4009 (the device resumes from its last ack). Ephemeral signals are dropped first,
once the queue is half full. A frame for a socket with nothing queued and room in its
transport is written at once, without a hop through the writer.

A session knows nothing of the socket server or the hub: it gets a `SessionEnv`
(settings, the event log reader, metrics, the ack sink, a spawner) and is itself the
hub's `Socket`, so it is tested with fakes (tests/server/test_connection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID, uuid4

from aiohttp import WSMsgType, web

from memoryd.config import Settings
from memoryd.handlers.context import Caller
from memoryd.protocol.codec import Codec
from memoryd.protocol.delivery import DeliveryCursor
from memoryd.protocol.errors import CloseCode
from memoryd.protocol.frames import ServerFrame
from memoryd.protocol.models import Event
from memoryd.server.metrics import Metrics
from memoryd.server.outbound import OutboundEvent, event_frame
from memoryd.server.ratelimit import RequestRate

log = logging.getLogger("memoryd.ws")

REPLAY_BATCH = 500
_CLOSE_DEADLINE = 3.0


class EventReader(Protocol):
    """The event log, as a socket reads it (`memoryd.storage.events.EventStore`)."""

    async def get_after(self, user_id: UUID, after_seq: int, limit: int) -> Sequence[Event]: ...


class AckSink(Protocol):
    """Where device acks go (`memoryd.server.acks.AckWriter`)."""

    def record(self, user_id: UUID, device_id: UUID, seq: int) -> None: ...


Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class SessionEnv:
    """What a device session needs of its node, and nothing more (one per node)."""

    settings: Settings
    events: EventReader
    metrics: Metrics
    acks: AckSink
    spawn: Spawn  # fire and forget, but kept referenced until done


class Flag:
    """`asyncio.Event`'s ``set``/``clear``/``is_set``/``wait``, without the deque every Event
    allocates (0.7 KiB; a socket has four flags and 10k sockets are the aim). Waiters are
    rare here: the parked writer, a replay waiting for room, shutdown."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            self._waiters.remove(waiter)


# The queue of every socket that never had to wait for its transport (most of them, with
# `_write_now`): shared and always empty, as an empty deque of its own costs 760 bytes.
# Only `_push` appends, and it gives the socket a deque of its own first.
_NO_QUEUE: deque[tuple[bytes, str, float]] = deque()  # (frame, label, published_at)


class Connection:
    def __init__(
        self,
        env: SessionEnv,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        codec: Codec,
    ) -> None:
        self.env = env
        self.ws = ws
        self.transport = transport
        self.codec = codec
        self.session_id = uuid4()
        self.caller: Caller | None = None
        self.cursor: DeliveryCursor[OutboundEvent] | None = None
        self.closing = False
        self.acked_seq = 0
        settings = env.settings
        self.max_queue = settings.ws_max_queue
        self.bucket = RequestRate(settings.ws_requests_per_second, settings.ws_request_burst)
        self._queue: deque[tuple[bytes, str, float]] = _NO_QUEUE
        self._wakeup = Flag()
        self._space = Flag()
        self._opcode = WSMsgType.BINARY if codec.binary else WSMsgType.TEXT
        self._writer: asyncio.Task[None] | None = None
        self._catch_up_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._drained = Flag()
        self.idle = Flag()  # no request being handled
        self.idle.set()
        self.draining = False  # shutting down: no new requests are taken
        self._close_requested = False
        self.superseded = False  # closed with 4011: the device lives on in a newer socket

    @property
    def user_id(self) -> UUID | None:
        return self.caller.user_id if self.caller else None

    @property
    def device_id(self) -> UUID | None:
        return self.caller.device_id if self.caller else None

    # -- outbound -----------------------------------------------------------------------

    def send(self, frame: ServerFrame, label: str) -> None:
        """Queue a control frame (welcome, reply, error)."""
        self._push(self.codec.encode(frame), label, 0.0, control=True)

    def push_signal(self, data: bytes, name: str) -> None:
        if self.cursor is None:
            # The hub knows this socket before its welcome is written (so that no event
            # falls between the log read and going live); a signal must not come first.
            return
        if len(self._queue) >= self.max_queue // 2:
            self.env.metrics.ws_queue_drops.inc()
            return
        self._push(data, "signal", 0.0)

    def _push(self, data: bytes, label: str, published_at: float, *, control: bool = False) -> None:
        if self.closing:
            return
        # Control frames answer requests, which the request rate bounds; a client that
        # sends requests without reading the answers is the slow one.
        if control and len(self._queue) >= 2 * self.max_queue:
            self._slow_consumer()
            return
        if not self._queue and not self._wakeup.is_set() and self._write_now(data):
            self._sent(label, published_at)
            return
        if self._writer is None:  # the first frame that has to wait: a queue and a writer
            self._queue = deque()
            self._writer = asyncio.create_task(self._write_loop(), name="memoryd-ws-writer")
        self._queue.append((data, label, published_at))
        self._wakeup.set()

    def _write_now(self, data: bytes) -> bool:
        """Write a frame at once when nothing is queued or being written and the transport
        has room: no writer-task switch per frame, the common case of fan-out.

        An uncompressed ``send_frame`` finishes without suspending unless the transport
        asked to pause, so it is stepped here synchronously. False: use the queue.
        """
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        step = self.ws.send_frame(data, self._opcode)
        try:
            step.send(None)
        except StopIteration:
            return True
        except (ConnectionError, RuntimeError):
            self.close_soon(CloseCode.GOING_AWAY, "write failed")
            return True
        # The frame is written; it stopped at the flow-control wait, which the writer
        # task does before its next frame anyway.
        step.close()
        return True

    def _sent(self, label: str, published_at: float) -> None:
        metrics = self.env.metrics
        metrics.frames_out(label).inc()
        if published_at:
            metrics.ws_fanout_latency.observe(time.perf_counter() - published_at)

    def _slow_consumer(self) -> None:
        if self.closing or self._close_requested:
            return  # counted and logged once per socket
        self.env.metrics.ws_slow_consumer_closes.inc()
        log.warning("slow consumer", extra={"device": str(self.device_id)})
        self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _room(self) -> int:
        return max(0, self.max_queue - len(self._queue))

    async def _wait_for_room(self) -> None:
        """Replay is pulled from the log, so it waits for room instead of overflowing; a
        peer that takes nothing for ``ws_stall_timeout`` is closed with 4009."""
        while len(self._queue) >= self.max_queue // 2 and not self.closing:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), self.env.settings.ws_stall_timeout)
            except TimeoutError:
                self._slow_consumer()
                return

    async def _write_loop(self) -> None:
        half = self.max_queue // 2
        try:
            while True:
                while not self._queue:
                    self._drained.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                self._drained.clear()
                data, label, published_at = self._queue.popleft()
                if len(self._queue) < half:
                    self._space.set()
                await self.ws.send_frame(data, self._opcode)
                self._sent(label, published_at)
        except (ConnectionError, RuntimeError):
            self.close_soon(CloseCode.GOING_AWAY, "write failed")

    # -- events -------------------------------------------------------------------------

    def start(self, cursor: DeliveryCursor[OutboundEvent]) -> None:
        """Begin replaying; live events are buffered until caught up."""
        self.cursor = cursor
        self._start_catch_up()

    def deliver_live(self, outbound: OutboundEvent) -> None:
        if self.cursor is None or self.closing:
            return
        if not self._room() and not self.cursor.catching_up:
            # No room: leave this event (and what follows) in the log and read it from
            # there at the pace the socket drains. Nothing is dropped, nobody waits.
            self.kick()
            return
        offer = self.cursor.offer_live(outbound.seq, outbound)
        for item in offer.send:
            self._push(item.encoded(self.codec), "event", item.published_at)
        if offer.start_catch_up:
            self._start_catch_up()

    def kick(self, head: int | None = None) -> None:
        """The log may hold events this socket has not seen (up to ``head``): read it."""
        cursor = self.cursor
        if cursor is None or self.closing or (head is not None and cursor.last_seq >= head):
            return
        if cursor.request_catch_up():
            self._start_catch_up()

    def _start_catch_up(self) -> None:
        if self._catch_up_task is None or self._catch_up_task.done():
            task = asyncio.create_task(self._catch_up(), name="memoryd-catch-up")
            task.add_done_callback(self._caught_up)
            self._catch_up_task = task

    def _caught_up(self, task: asyncio.Task[None]) -> None:
        if self._catch_up_task is task:  # an idle socket keeps no finished task
            self._catch_up_task = None

    async def _catch_up(self) -> None:
        assert self.cursor is not None and self.caller is not None
        cursor, events, metrics = self.cursor, self.env.events, self.env.metrics
        try:
            while not self.closing:
                rows = await events.get_after(
                    self.caller.user_id, cursor.begin_read(), REPLAY_BATCH
                )
                for event in rows:
                    await self._wait_for_room()
                    if cursor.accept_replayed(event.seq):
                        self._push(self.codec.encode(event_frame(event)), "event", 0.0)
                        metrics.ws_replayed_events.inc()
                if len(rows) == REPLAY_BATCH:
                    continue
                await self._wait_for_room()
                # Synchronously from here: a live event must not slip in between.
                ready, caught_up = cursor.finish_read(room=self._room())
                for item in ready:
                    self._push(item.encoded(self.codec), "event", item.published_at)
                if caught_up:
                    return
                if not rows and ready == []:  # the missing seq's publish is on its way
                    await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catch-up failed", extra={"device": str(self.device_id)})
            self.close_soon(CloseCode.INTERNAL_ERROR, "catch-up failed")

    def on_ack(self, seq: int) -> None:
        assert self.caller is not None and self.caller.device_id is not None
        sent = self.cursor.last_seq if self.cursor else 0
        seq = min(seq, sent)  # never acknowledge what was not sent
        if seq > self.acked_seq:
            self.acked_seq = seq
            self.env.acks.record(self.caller.user_id, self.caller.device_id, seq)

    # -- auth expiry --------------------------------------------------------------------

    def expire_at(self, unix_time: float) -> None:
        """Close with 4001 when the access token expires, unless refreshed before."""
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, unix_time - time.time())
        self._expiry = loop.call_later(
            delay, self.close_soon, CloseCode.UNAUTHORIZED, "token expired"
        )

    # -- closing ------------------------------------------------------------------------

    def close_soon(self, code: int, reason: str) -> None:
        if not self.closing and not self._close_requested:
            self._close_requested = True
            self.env.spawn(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.superseded = code == CloseCode.SUPERSEDED
        self._space.set()
        if self._expiry is not None:
            self._expiry.cancel()
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), _CLOSE_DEADLINE
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self.transport
            if transport is not None:
                transport.abort()  # a peer that reads nothing cannot take a close frame

    async def cleanup(self) -> None:
        """Stop the tasks of a finished connection."""
        self.closing = True
        self._space.set()
        if self._expiry is not None:
            self._expiry.cancel()
        for task in (self._writer, self._catch_up_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def flush_and_close(self, code: int, reason: str, deadline: float) -> None:
        """Graceful close: finish the request in hand, let queued frames go out, close.

        Both waits are bounded by ``deadline``.
        """
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), deadline)
        if self._queue and not self.ws.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), deadline)
        await self.close(code, reason)
