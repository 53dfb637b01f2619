"""The outbound half of a device socket: corked write, bounded queue, writer, stall.

A frame for a socket with nothing queued and room in its transport goes out without a
hop through a writer task (the common case of fan-out): framed here and corked until the
end of the loop's current step, so that the frames one step makes for one socket (a
sender's own event and the reply to its send) leave in one ``send``. Otherwise it waits
in a bounded queue, drained by a writer task started the first time a frame has to wait,
so an idle socket owns no task and no queue. Corked frames always go out before anything
that comes after them: a queued frame, the close frame. What to queue, drop or refuse is
the session's call: `memoryd.server.connection.Connection` is an `Outbox` (a base class,
not a member: no extra object and no reference cycle per socket) and overrides
``write_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque

from aiohttp import WSMsgType, web

from memoryd.server.metrics import Metrics


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
# Only `push` appends, and it gives the socket a deque of its own first.
_NO_QUEUE: deque[tuple[bytes, str, float]] = deque()  # (frame, label, published_at)

_FIN = 0x80
_LEN16, _LEN64 = struct.Struct("!BBH"), struct.Struct("!BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """RFC 6455 §5.2 header of one final, unmasked, uncompressed frame (a server's)."""
    if length < 126:
        return bytes((_FIN | opcode, length))
    if length < 65536:
        return _LEN16.pack(_FIN | opcode, 126, length)
    return _LEN64.pack(_FIN | opcode, 127, length)


class Outbox:
    __slots__ = (
        "_corked",
        "_drained",
        "_opcode",
        "_queue",
        "_space",
        "_wakeup",
        "_writer",
        "closed",
        "max_queue",
        "metrics",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        *,
        binary: bool,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.max_queue = max_queue
        self.metrics = metrics
        self.closed = False  # the session is closing: nothing more goes out
        self._opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
        self._queue: deque[tuple[bytes, str, float]] = _NO_QUEUE
        self._wakeup = Flag()
        self._space = Flag()
        self._drained = Flag()
        self._writer: asyncio.Task[None] | None = None
        self._corked: list[bytes] = []  # framed, written at the end of this loop step

    def queued(self) -> int:
        return len(self._queue)

    def room(self) -> int:
        return max(0, self.max_queue - len(self._queue))

    def filling(self) -> bool:
        """At least half full: signals are dropped, replay waits."""
        return len(self._queue) >= self.max_queue // 2

    def push_frame(self, data: bytes, label: str, published_at: float) -> None:
        """Write ``data`` now if nothing is ahead of it and the transport has room, else
        queue it for the writer."""
        if not self._queue and not self._wakeup.is_set() and self._write_now(data):
            self._sent(label, published_at)
            return
        self.uncork()  # what was corked goes before what queues
        if self._writer is None:  # the first frame that has to wait: a queue and a writer
            self._queue = deque()
            self._writer = asyncio.create_task(self._write_loop(), name="memoryd-ws-writer")
        self._queue.append((data, label, published_at))
        self._wakeup.set()

    def _write_now(self, data: bytes) -> bool:
        """Cork a frame when nothing is queued or being written and the transport has
        room: no writer-task switch per frame, the common case of fan-out. The first
        corked frame of a step schedules `uncork` for the end of it. False: use the
        queue."""
        transport = self.transport
        if transport is None or transport.is_closing() or transport.get_write_buffer_size():
            return False
        if not self._corked:
            asyncio.get_running_loop().call_soon(self.uncork)
        self._corked += (frame_header(self._opcode, len(data)), data)
        return True

    def uncork(self) -> None:
        """Write the corked frames, in one ``send``. A closing socket (the peer's close
        frame was answered) takes no more frames; a gone peer is `write_failed`."""
        if not self._corked:
            return
        corked, self._corked = self._corked, []
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return
        try:
            transport.write(b"".join(corked))
        except (ConnectionError, RuntimeError):
            self.write_failed()

    def _sent(self, label: str, published_at: float) -> None:
        metrics = self.metrics
        metrics.frames_out(label).inc()
        if published_at:
            metrics.ws_fanout_latency.observe(time.perf_counter() - published_at)

    async def wait_for_room(self, timeout: float) -> bool:
        """Wait until the queue is below half; False when it did not get there within
        ``timeout`` (the peer takes nothing: a slow consumer)."""
        while self.filling() and not self.closed:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), timeout)
            except TimeoutError:
                return False
        return True

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
            self.write_failed()

    def write_failed(self) -> None:
        """The peer is gone: nothing more goes out (the session closes the socket)."""
        self.stop_sending()

    async def flush(self, deadline: float) -> None:
        """Let what is queued go out, for at most ``deadline`` seconds."""
        self.uncork()
        if self._queue and not self.ws.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), deadline)

    def stop_sending(self) -> None:
        """Nothing more goes out (what was corked still does, before the close frame);
        a replay waiting for room stops waiting."""
        self.uncork()
        self.closed = True
        self._space.set()

    async def stop_writer(self) -> None:
        self.stop_sending()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
