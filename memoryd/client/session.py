"""The client session: one socket at a time, resumed across reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from memoryd.protocol import frames as f
from memoryd.protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from memoryd.protocol.errors import CloseCode

log = logging.getLogger("memoryd.client")

TokenSource = str | Callable[[], Awaitable[str]]

# Close codes after which reconnecting cannot help (or would fight another connection).
_FINAL_CLOSES = {CloseCode.SUPERSEDED}


class RequestError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str, retry_after: float | None, details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details


class Disconnected(ConnectionError):
    """The connection dropped before the request's answer arrived."""


class HandshakeError(ConnectionError):
    """The server refused the session (bad token, too many sockets, ...)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.close_code = close_code


@dataclass(frozen=True)
class ClientEvent:
    seq: int
    event: str
    data: Any


@dataclass(frozen=True)
class ClientSignal:
    signal: str
    data: Any


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class Client:
    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        device_id: str | None = None,
        last_seq: int | None = None,
        codec: str = "json",
        reconnect: bool = True,
        client_name: str = "memoryd-python",
        ack_interval: float = 0.05,
        max_backoff: float = 10.0,
        wait_rate_limited: bool = False,
    ) -> None:
        if codec not in ("json", "msgpack"):
            raise ValueError("codec must be 'json' or 'msgpack'")
        self.url = url
        self._token = token
        self.device_id = device_id
        self.last_seq = last_seq  # newest seq received; the resume point
        self.codec = codec
        self.reconnect = reconnect
        self.client_name = client_name
        self.ack_interval = ack_interval
        self.max_backoff = max_backoff
        # Opt-in: a request refused with ``rate_limited`` and a ``retryAfter`` is sent again
        # after that long (within its timeout) instead of raising; the server never counts
        # a request that waited out its hint as abuse (4008).
        self.wait_rate_limited = wait_rate_limited
        self.welcome: f.Welcome | None = None
        self.close_code: int | None = None
        self.connections = 0  # how many sockets this session has opened
        self._binary = codec == "msgpack"
        if self._binary:
            self._encode = msgspec.msgpack.Encoder().encode
            self._decoder: Any = msgspec.msgpack.Decoder(f.ServerFrame)
        else:
            self._encode = msgspec.json.Encoder().encode
            self._decoder = msgspec.json.Decoder(f.ServerFrame)
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._signals: asyncio.Queue[ClientSignal] = asyncio.Queue(maxsize=1000)
        self._connected = asyncio.Event()
        self._first_welcome: asyncio.Future[f.Welcome] = asyncio.get_running_loop().create_future()
        self._runner: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._to_ack = 0
        self._acked = 0
        self._closed = False

    # -- public API ---------------------------------------------------------------------

    async def request(self, type_: str, /, timeout: float = 30.0, **params: Any) -> Any:
        """Send a request; return the reply's ``data`` or raise `RequestError`.

        With ``wait_rate_limited`` a ``rate_limited`` answer is waited out (its
        ``retryAfter``) and the request sent again, as long as ``timeout`` allows.
        """
        if not self.wait_rate_limited:
            return await self._request_once(type_, timeout, params)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self._request_once(type_, max(0.0, deadline - loop.time()), params)
            except RequestError as exc:
                wait = exc.retry_after
                if exc.code != "rate_limited" or wait is None or loop.time() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)

    async def _request_once(self, type_: str, timeout: float, params: dict[str, Any]) -> Any:
        await self.wait_connected(timeout)
        ws = self._ws
        if ws is None:
            raise Disconnected("not connected")
        request_id = next(self._ids)
        frame = {"type": type_, "id": request_id, **{_camel(k): v for k, v in params.items()}}
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send(ws, frame)
            return await asyncio.wait_for(future, timeout)
        except ConnectionClosed as exc:
            raise Disconnected(str(exc)) from None
        finally:
            self._pending.pop(request_id, None)

    async def send_raw(self, data: bytes | str) -> None:
        """Send bytes as they are (for testing a server's handling of bad frames)."""
        await self.wait_connected()
        assert self._ws is not None
        await self._ws.send(data)

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Every event, once, in seq order; each is acknowledged after it is handed out."""
        while True:
            event = await self._events.get()
            yield event
            self._to_ack = max(self._to_ack, event.seq)

    async def next_event(self, timeout: float = 10.0) -> ClientEvent:
        event = await asyncio.wait_for(self._events.get(), timeout)
        self._to_ack = max(self._to_ack, event.seq)
        return event

    async def next_signal(self, timeout: float = 10.0) -> ClientSignal:
        return await asyncio.wait_for(self._signals.get(), timeout)

    def pending_events(self) -> int:
        return self._events.qsize()

    async def wait_connected(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            raise Disconnected("client closed")
        if not self._connected.is_set():
            await asyncio.wait_for(self._connected.wait(), timeout)

    async def disconnect(self) -> None:
        """Drop the current socket abruptly (tests: the session then reconnects)."""
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def close(self) -> None:
        self._closed = True
        # Ack and close on the live socket first: cancelling the runner clears ``_ws``.
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._flush_ack(ws)
            await ws.close()
        for task in (self._acker, self._runner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail_pending("client closed")

    # -- connection loop ----------------------------------------------------------------

    async def start(self) -> f.Welcome:
        self._runner = asyncio.create_task(self._run(), name="memoryd-client")
        self._acker = asyncio.create_task(self._ack_loop(), name="memoryd-client-acks")
        return await self._first_welcome

    async def _token_value(self) -> str:
        return self._token if isinstance(self._token, str) else await self._token()

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self._session()
                attempt = 0
            except HandshakeError as exc:
                if not self._first_welcome.done():
                    self._first_welcome.set_exception(exc)
                    return
                if isinstance(self._token, str):
                    log.warning("session refused: %s", exc)
                    return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                if not self._first_welcome.done():
                    self._first_welcome.set_exception(exc)
                    return
                log.debug("connection lost: %r", exc)
            finally:
                self._connected.clear()
                self._ws = None
                self._fail_pending("connection lost")
            if not self.reconnect or self._closed or self.close_code in _FINAL_CLOSES:
                return
            attempt += 1
            # Full jitter: a fleet of clients dropped together does not return together.
            delay = random.uniform(0, min(self.max_backoff, 0.05 * 2**attempt))
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        subprotocol = SUBPROTOCOL_MSGPACK if self._binary else SUBPROTOCOL_JSON
        async with ws_connect(
            self.url,
            subprotocols=[subprotocol],  # type: ignore[list-item]
            compression=None,
            proxy=None,
            max_size=None,
            ping_interval=None,  # the server pings; we answer
        ) as ws:
            hello: dict[str, Any] = {"type": "hello", "token": await self._token_value()}
            if self.device_id:
                hello["deviceId"] = self.device_id
            if self.last_seq is not None:
                hello["lastSeq"] = self.last_seq
            hello["client"] = self.client_name
            await self._send(ws, hello)
            first = self._decoder.decode(await ws.recv())
            if isinstance(first, f.Error):
                try:
                    await ws.recv()
                except ConnectionClosed:
                    self.close_code = ws.close_code
                raise HandshakeError(first.code, first.message, self.close_code)
            if not isinstance(first, f.Welcome):
                raise HandshakeError("protocol", f"expected welcome, got {type(first).__name__}")
            self.welcome = first
            self.device_id = str(first.device_id)
            # Only a resync starts at the head. Without a last_seq and without resync the
            # server replays from this device's stored ack: those events must be kept.
            if first.resync:
                self.last_seq = first.head_seq
            self._ws = ws
            self.connections += 1
            self.close_code = None
            self._connected.set()
            if not self._first_welcome.done():
                self._first_welcome.set_result(first)
            try:
                async for raw in ws:
                    self._on_frame(self._decoder.decode(raw))
            finally:
                self.close_code = ws.close_code

    def _on_frame(self, frame: f.ServerFrame) -> None:
        match frame:
            case f.EventFrame():
                if self.last_seq is not None and frame.seq <= self.last_seq:
                    return  # already received (the server never sends one twice; be safe)
                self.last_seq = frame.seq
                self._events.put_nowait(ClientEvent(frame.seq, frame.event, frame.data))
            case f.Reply():
                future = self._pending.get(frame.id)
                if future is not None and not future.done():
                    future.set_result(frame.data)
            case f.Error():
                error = RequestError(frame.code, frame.message, frame.retry_after, frame.details)
                future = self._pending.get(frame.id) if frame.id is not None else None
                if future is not None and not future.done():
                    future.set_exception(error)
                else:
                    log.warning("server error: %s", error)
            case f.Signal():
                if self._signals.full():
                    self._signals.get_nowait()
                self._signals.put_nowait(ClientSignal(frame.signal, frame.data))
            case f.Welcome():
                pass

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Disconnected(why))

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        data = self._encode(frame)
        await ws.send(data, text=not self._binary)

    # -- acks ---------------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ack_interval)
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._flush_ack(ws)

    async def _flush_ack(self, ws: ClientConnection) -> None:
        if self._to_ack > self._acked:
            seq = self._to_ack
            await self._send(ws, {"type": "ack", "seq": seq})
            self._acked = seq


@asynccontextmanager
async def connect(
    url: str,
    token: TokenSource,
    **options: Any,
) -> AsyncIterator[Client]:
    """Open a session (waits for ``welcome``); closes it on exit. See `Client` for options."""
    client = Client(url, token, **options)
    try:
        await client.start()
        yield client
    finally:
        await client.close()
