"""One lean WebSocket client for memoryd and the peers, on the ``websockets`` asyncio API.

Every benchmark drives every server with this client, so the servers are compared with the
same client costs. One `Device` is one socket and one reader task; it records deliveries
into a shared `Recorder` and never awaits anything on the receive path but the socket.

Latency needs no clock in the payload: a send is numbered ``n`` and ``n`` travels in a
field the server copies unchanged into the fan-out frame (the typing signal's ``memoryId``
is ``UUID(int=n)``, a message's ``clientMsgId`` is ``b<n>``). Sender and receivers live in
this one process, so ``Recorder.sent_at[n]`` and the receive time share one clock.

Protocols:

* ``memoryd``: protocol v1 (``hello``/``welcome``, requests, events, ``typing`` signals,
  cumulative acks), JSON or MessagePack.
* ``ws-relay``: the bare-websockets peer (loadtests/baselines/ws_relay.py): the same JSON
  ``typing`` frame in, the same ``signal`` frame out.
* ``socketio``: the python-socketio peer, spoken as Engine.IO v4 / Socket.IO v5 over the
  WebSocket transport (``0`` open, ``40`` connect with an auth payload, ``42[...]``
  events, ``2``/``3`` ping/pong).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from array import array
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

JSON_DECODE = msgspec.json.Decoder().decode
JSON_ENCODE = msgspec.json.Encoder().encode
MSGPACK_DECODE = msgspec.msgpack.Decoder().decode
MSGPACK_ENCODE = msgspec.msgpack.Encoder().encode
SUBPROTOCOL = {"json": "memoryd.v1.json", "msgpack": "memoryd.v1.msgpack"}
OPEN_TIMEOUT = 60.0


def typing_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def _n_of_typing(memory_id: str) -> int:
    return int(memory_id.replace("-", ""), 16)


class Recorder:
    """Send times by number; latencies (seconds) and counts of what was delivered."""

    def __init__(self) -> None:
        self.sent_at = array("d")
        self.senders: list[object] = []  # the device that sent number n
        self.latencies = array("d")
        self.delivered = 0
        self.stale = 0  # deliveries of sends from before the current window
        self.replies = 0
        self.errors: dict[str, int] = {}
        self.first = 0  # numbers below this belong to an earlier window
        self.last_at = 0.0  # when the latest delivery came

    def next_number(self, now: float, sender: object = None) -> int:
        self.sent_at.append(now)
        self.senders.append(sender)
        return len(self.sent_at) - 1

    def window(self) -> None:
        """Start a new measuring window: earlier sends still arriving count as stale."""
        self.first = len(self.sent_at)
        self.latencies = array("d")
        self.delivered = 0
        self.stale = 0
        self.last_at = 0.0
        self.replies = 0
        self.errors = {}

    def deliver(self, n: int, now: float) -> None:
        if n < self.first:
            self.stale += 1
            return
        self.delivered += 1
        self.last_at = now
        self.latencies.append(now - self.sent_at[n])

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class Device:
    """One socket of one user."""

    kind = "?"

    def __init__(self, base_url: str, recorder: Recorder) -> None:
        self.base_url = base_url
        self.recorder = recorder
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.frames_in = 0

    async def _open(self, url: str, subprotocols: list[str] | None = None) -> ClientConnection:
        return await connect(
            url,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,  # the servers ping; websockets answers by itself
            close_timeout=2,
            max_size=2**22,
            max_queue=None,
        )

    def _start_reader(self) -> None:
        self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.ws is not None
        ws, on_frame = self.ws, self._on_frame
        try:
            while True:
                data = await ws.recv(decode=False)
                self.frames_in += 1
                on_frame(data)
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        finally:
            self.closed.set()

    def _on_frame(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_typing(self, n: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class MemorydDevice(Device):
    """A memoryd device session (protocol v1)."""

    kind = "memoryd"

    def __init__(
        self,
        base_url: str,
        recorder: Recorder,
        token: str,
        *,
        codec: str = "json",
        device_id: uuid.UUID | None = None,
        last_seq: int | None = None,
        on_event: Callable[[MemorydDevice, int, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(base_url, recorder)
        self.token = token
        self.codec = codec
        self.device_id = device_id
        self.user_id: str | None = None
        self.last_seq = last_seq
        self.head_seq = 0
        self.acked = last_seq or 0
        self.events = 0
        self.on_event = on_event
        self._decode = JSON_DECODE if codec == "json" else MSGPACK_DECODE
        self._encode = JSON_ENCODE if codec == "json" else MSGPACK_ENCODE
        self._text = codec == "json"
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = 0

    async def connect(self) -> dict[str, Any]:
        self.ws = await self._open(self.base_url + "/ws", [SUBPROTOCOL[self.codec]])
        hello: dict[str, Any] = {"type": "hello", "token": self.token, "client": "bench"}
        if self.device_id is not None:
            hello["deviceId"] = str(self.device_id)
        if self.last_seq is not None:
            hello["lastSeq"] = self.last_seq
        await self.ws.send(self._encode(hello), text=self._text)
        welcome = self._decode(await asyncio.wait_for(self.ws.recv(decode=False), OPEN_TIMEOUT))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        self.device_id = uuid.UUID(welcome["deviceId"])
        self.user_id = welcome["userId"]
        self.head_seq = welcome["headSeq"]
        if self.last_seq is None:
            self.last_seq = self.head_seq
        self._start_reader()
        return welcome  # type: ignore[no-any-return]

    def _on_frame(self, data: bytes) -> None:
        frame = self._decode(data)
        kind = frame["type"]
        if kind == "event":
            seq = frame["seq"]
            self.last_seq = seq
            self.events += 1
            event = frame["data"]
            if frame["event"] == "message.created":
                cid = event.get("clientMsgId")
                if cid and cid[0] == "b":
                    n = int(cid[1:])
                    # The sender's own echo is not a delivery "on another device".
                    if n < len(self.recorder.senders) and self.recorder.senders[n] is not self:
                        self.recorder.deliver(n, time.perf_counter())
            if self.on_event is not None:
                self.on_event(self, seq, frame)
        elif kind == "signal":
            if frame["signal"] == "typing":
                self.recorder.deliver(_n_of_typing(frame["data"]["memoryId"]), time.perf_counter())
        elif kind == "reply":
            self.recorder.replies += 1
            fut = self._pending.pop(frame["id"], None) if isinstance(frame["id"], int) else None
            if fut is not None and not fut.done():
                fut.set_result(frame.get("data"))
        elif kind == "error":
            self.recorder.error(frame.get("code", "?"))
            rid = frame.get("id")
            fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
            if fut is not None and not fut.done():
                fut.set_exception(RuntimeError(f"{frame.get('code')}: {frame.get('message')}"))

    async def request(self, frame: dict[str, Any], timeout: float = 30.0) -> Any:
        assert self.ws is not None
        self._ids += 1
        frame["id"] = self._ids
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = fut
        await self.ws.send(self._encode(frame), text=self._text)
        return await asyncio.wait_for(fut, timeout)

    async def send_typing(self, n: int) -> None:
        assert self.ws is not None
        frame = {"type": "typing", "memoryId": typing_id(n)}
        await self.ws.send(self._encode(frame), text=self._text)

    async def send_message(self, memory_id: str, n: int, content: str) -> None:
        """``message.send`` without waiting for the reply (the reader counts replies)."""
        assert self.ws is not None
        self._ids += 1
        frame = {
            "type": "message.send",
            "id": self._ids,
            "memoryId": memory_id,
            "clientMsgId": f"b{n}",
            "content": content,
            "messageType": "text",
        }
        await self.ws.send(self._encode(frame), text=self._text)

    async def ack(self) -> None:
        if self.ws is not None and self.last_seq and self.last_seq > self.acked:
            self.acked = self.last_seq
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(
                    self._encode({"type": "ack", "seq": self.acked}), text=self._text
                )


class RelayDevice(Device):
    """A socket of the bare-websockets relay."""

    kind = "ws-relay"

    def __init__(self, base_url: str, recorder: Recorder, user: str, device: str) -> None:
        super().__init__(base_url, recorder)
        self.user = user
        self.device = device

    async def connect(self) -> None:
        self.ws = await self._open(f"{self.base_url}/?user={self.user}&device={self.device}")
        welcome = JSON_DECODE(await asyncio.wait_for(self.ws.recv(decode=False), OPEN_TIMEOUT))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"no welcome: {welcome}")
        self._start_reader()

    def _on_frame(self, data: bytes) -> None:
        frame = JSON_DECODE(data)
        if frame.get("type") == "signal" and frame["signal"] == "typing":
            self.recorder.deliver(_n_of_typing(frame["data"]["memoryId"]), time.perf_counter())

    async def send_typing(self, n: int) -> None:
        assert self.ws is not None
        await self.ws.send(JSON_ENCODE({"type": "typing", "memoryId": typing_id(n)}), text=True)


class SocketIODevice(Device):
    """A Socket.IO client (Engine.IO v4, WebSocket transport only)."""

    kind = "socketio"

    def __init__(self, base_url: str, recorder: Recorder, user: str, device: str) -> None:
        super().__init__(base_url, recorder)
        self.user = user
        self.device = device

    async def connect(self) -> None:
        self.ws = await self._open(f"{self.base_url}/socket.io/?EIO=4&transport=websocket")
        opened = await asyncio.wait_for(self.ws.recv(), OPEN_TIMEOUT)
        if not opened.startswith("0"):
            raise RuntimeError(f"no Engine.IO open packet: {opened!r}")
        auth = JSON_ENCODE({"user": self.user, "device": self.device}).decode()
        await self.ws.send("40" + auth)
        while True:
            packet = await asyncio.wait_for(self.ws.recv(), OPEN_TIMEOUT)
            if packet.startswith("40"):
                break
            if packet.startswith("44"):
                raise RuntimeError(f"Socket.IO connect refused: {packet}")
        self._start_reader()

    def _on_frame(self, data: bytes) -> None:
        if data[:2] == b"42":
            name, payload = JSON_DECODE(data[2:])
            if name == "signal" and payload["signal"] == "typing":
                n = _n_of_typing(payload["data"]["memoryId"])
                self.recorder.deliver(n, time.perf_counter())
        elif data == b"2" and self.ws is not None:  # Engine.IO ping: answer pong
            asyncio.get_running_loop().create_task(self._pong())

    async def _pong(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send("3")

    async def send_typing(self, n: int) -> None:
        assert self.ws is not None
        payload = JSON_ENCODE(["typing", {"memoryId": typing_id(n)}])
        await self.ws.send(b"42" + payload, text=True)


async def connect_all(devices: list[Device], parallel: int = 64) -> None:
    """Connect ``devices`` with at most ``parallel`` handshakes in flight."""
    sem = asyncio.Semaphore(parallel)

    async def one(d: Device) -> None:
        async with sem:
            await d.connect()  # type: ignore[attr-defined]

    await asyncio.gather(*(one(d) for d in devices))


async def close_all(devices: list[Device], parallel: int = 256) -> None:
    sem = asyncio.Semaphore(parallel)

    async def one(d: Device) -> None:
        async with sem:
            await d.close()

    await asyncio.gather(*(one(d) for d in devices), return_exceptions=True)
