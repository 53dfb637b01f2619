"""One device session over one WebSocket: cursor, catch-up, acks, token expiry, closing.

Live events come from the hub (``deliver_live``), replayed ones from the event log
(``_catch_up``); a `DeliveryCursor` keeps them gap-free, in order and without duplicates.
Frames go out through its base class `Outbox` (`memoryd.server.outbox`: direct write, or
bounded queue and writer), which only moves bytes. Nothing here awaits a slow peer on the
fan-out path: a live event that finds the queue full stays in the event log and is
replayed as the socket drains; a socket whose queue stays at least half full for
``ws_stall_timeout`` is closed with 4009 (the device resumes from its last ack).
Ephemeral signals are dropped first, once the queue is half full.

A session knows nothing of the socket server or the hub: it gets a `SessionEnv`
(settings, the event log reader, metrics, the ack sink, a spawner) and is itself the
hub's `Socket`, so it is tested with fakes (tests/server/test_connection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID, uuid4

from aiohttp import web

from memoryd.config import Settings
from memoryd.handlers.context import Caller
from memoryd.protocol.codec import Codec
from memoryd.protocol.delivery import DeliveryCursor
from memoryd.protocol.errors import CloseCode
from memoryd.protocol.frames import ServerFrame
from memoryd.protocol.models import Event
from memoryd.server.metrics import Metrics
from memoryd.server.outbound import OutboundEvent, event_frame
from memoryd.server.outbox import Flag, Outbox
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


class Connection(Outbox):
    """The session half of a device socket: caller, cursor, catch-up, acks, token expiry,
    closing. What goes out, is dropped or refused is decided here; `Outbox` writes it."""

    def __init__(
        self,
        env: SessionEnv,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        codec: Codec,
    ) -> None:
        super().__init__(
            ws,
            transport,
            binary=codec.binary,
            max_queue=env.settings.ws_max_queue,
            metrics=env.metrics,
        )
        self.env = env
        self.codec = codec
        self.session_id = uuid4()
        self.caller: Caller | None = None
        self.cursor: DeliveryCursor[OutboundEvent] | None = None
        self.acked_seq = 0
        settings = env.settings
        self.bucket = RequestRate(settings.ws_requests_per_second, settings.ws_request_burst)
        self._catch_up_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
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

    @property
    def closing(self) -> bool:
        return self.closed

    # -- outbound -----------------------------------------------------------------------

    def send(self, frame: ServerFrame, label: str) -> None:
        """Queue a control frame (welcome, reply, error)."""
        if self.closing:
            return
        # Control frames answer requests, which the request rate bounds; a client that
        # sends requests without reading the answers is the slow one.
        if self.queued() >= 2 * self.max_queue:
            self._slow_consumer()
            return
        self.push_frame(self.codec.encode(frame), label, 0.0)

    def push_signal(self, data: bytes, name: str) -> None:
        if self.cursor is None or self.closing:
            # The hub knows this socket before its welcome is written (so that no event
            # falls between the log read and going live); a signal must not come first.
            return
        if self.filling():
            self.env.metrics.ws_queue_drops.inc()
            return
        self.push_frame(data, "signal", 0.0)

    def _push_event(self, data: bytes, published_at: float) -> None:
        if not self.closing:
            self.push_frame(data, "event", published_at)

    def write_failed(self) -> None:
        self.close_soon(CloseCode.GOING_AWAY, "write failed")

    def _slow_consumer(self) -> None:
        if self.closing or self._close_requested:
            return  # counted and logged once per socket
        self.env.metrics.ws_slow_consumer_closes.inc()
        log.warning("slow consumer", extra={"device": str(self.device_id)})
        self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    async def _wait_for_room(self) -> None:
        """Replay is pulled from the log, so it waits for room instead of overflowing; a
        peer that takes nothing for ``ws_stall_timeout`` is closed with 4009."""
        if not await self.wait_for_room(self.env.settings.ws_stall_timeout):
            self._slow_consumer()

    # -- events -------------------------------------------------------------------------

    def start(self, cursor: DeliveryCursor[OutboundEvent]) -> None:
        """Begin replaying; live events are buffered until caught up."""
        self.cursor = cursor
        self._start_catch_up()

    def deliver_live(self, outbound: OutboundEvent) -> None:
        if self.cursor is None or self.closing:
            return
        if not self.room() and not self.cursor.catching_up:
            # No room: leave this event (and what follows) in the log and read it from
            # there at the pace the socket drains. Nothing is dropped, nobody waits.
            self.kick()
            return
        offer = self.cursor.offer_live(outbound.seq, outbound)
        for item in offer.send:
            self._push_event(item.encoded(self.codec), item.published_at)
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
                        self._push_event(self.codec.encode(event_frame(event)), 0.0)
                        metrics.ws_replayed_events.inc()
                if len(rows) == REPLAY_BATCH:
                    continue
                await self._wait_for_room()
                # Synchronously from here: a live event must not slip in between.
                ready, caught_up = cursor.finish_read(room=self.room())
                for item in ready:
                    self._push_event(item.encoded(self.codec), item.published_at)
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
        self.stop_sending()
        self.superseded = code == CloseCode.SUPERSEDED
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
        self.stop_sending()
        if self._expiry is not None:
            self._expiry.cancel()
        task = self._catch_up_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stop_writer()

    async def flush_and_close(self, code: int, reason: str, deadline: float) -> None:
        """Graceful close: finish the request in hand, let queued frames go out, close.

        Both waits are bounded by ``deadline``.
        """
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), deadline)
        await self.flush(deadline)
        await self.close(code, reason)
