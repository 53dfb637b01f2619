"""``GET /ws``: the handshake, the read loop and graceful shutdown of device sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Coroutine
from typing import Any
from uuid import UUID

from aiohttp import WSMsgType, web

from memoryd.config import Settings
from memoryd.errors import ClientError, RateLimited
from memoryd.handlers.auth import caller_from_claims
from memoryd.handlers.context import Services
from memoryd.protocol import frames as f
from memoryd.protocol.codec import SUBPROTOCOLS, codec_for
from memoryd.protocol.delivery import DeliveryCursor
from memoryd.protocol.errors import CloseCode, ErrorCode, ProtocolError
from memoryd.server.acks import AckWriter
from memoryd.server.connection import Connection, SessionEnv
from memoryd.server.dispatch import dispatch
from memoryd.server.hub import Hub
from memoryd.server.metrics import Metrics
from memoryd.server.outbound import OutboundEvent

log = logging.getLogger("memoryd.ws")

# Frames up to this many times the announced limit get an error frame; beyond it the
# WebSocket layer itself closes with 1009 (we never buffer unbounded input).
_HARD_FRAME_FACTOR = 4


class SocketServer:
    def __init__(
        self, settings: Settings, services: Services, hub: Hub, metrics: Metrics, acks: AckWriter
    ) -> None:
        self.settings = settings
        self.services = services
        self.hub = hub
        self.metrics = metrics
        self.acks = acks
        self.limits = f.Limits(
            max_frame_bytes=settings.ws_max_frame_bytes,
            max_content_chars=settings.max_content_chars,
            max_queue=settings.ws_max_queue,
            requests_per_second=settings.ws_requests_per_second,
            request_burst=settings.ws_request_burst,
            max_sockets_per_user=settings.ws_max_sockets_per_user,
        )
        self.accepting = True
        self.background: set[asyncio.Task[None]] = set()
        self.env = SessionEnv(settings, services.store.events, metrics, acks, self.spawn)
        self._open: set[Connection] = set()  # every session, for the shutdown

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Fire and forget, but keep a reference so the task is not collected mid-flight."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        settings = self.settings
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS,
            heartbeat=settings.ws_heartbeat,
            max_msg_size=settings.ws_max_frame_bytes * _HARD_FRAME_FACTOR,
            decode_text=False,
            compress=False,  # per-socket deflate would undo encode-once fan-out
        )
        if not self.accepting:
            raise web.HTTPServiceUnavailable(reason="server shutting down")
        await ws.prepare(request)
        conn = Connection(self.env, ws, request.transport, codec_for(ws.ws_protocol))
        self._open.add(conn)
        self.metrics.websocket_connections_active.inc()
        try:
            if await self._handshake(conn):
                await self._read_loop(conn)
        finally:
            self._open.discard(conn)
            self.metrics.websocket_connections_active.dec()
            self.hub.remove(conn)
            await conn.cleanup()
            if conn.caller is not None:
                if not conn.superseded:  # else the device is still online, elsewhere
                    self._announce_presence(conn, online=False)
                await self.acks.flush()
        return ws

    # -- handshake ----------------------------------------------------------------------

    async def _handshake(self, conn: Connection) -> bool:
        hello = await self._receive_hello(conn)
        if hello is None:
            return False
        svc = self.services
        try:
            claims = svc.tokens.verify_access(hello.token)
        except ClientError as exc:
            await self._refuse(conn, exc.code, exc.message, CloseCode.UNAUTHORIZED)
            return False
        if claims.expires_at.timestamp() <= time.time():
            # Inside the clock-skew leeway, but the expiry timer would close it at once (and
            # a client would reconnect with the same token again and again).
            message = "Token expired"
            await self._refuse(conn, ErrorCode.TOKEN_EXPIRED, message, CloseCode.UNAUTHORIZED)
            return False
        if (
            await self._socket_count(claims.user_id, hello.device_id)
            >= self.settings.ws_max_sockets_per_user
        ):
            message = f"at most {self.settings.ws_max_sockets_per_user} sockets per user"
            await self._refuse(conn, ErrorCode.RATE_LIMITED, message, CloseCode.POLICY)
            return False
        user = await svc.store.users.get(claims.user_id)
        if user is None or not user.is_active:
            message = "this account is disabled"
            await self._refuse(conn, ErrorCode.UNAUTHORIZED, message, CloseCode.UNAUTHORIZED)
            return False
        # An ack that arrived on this device's previous socket may not be saved yet. Read
        # the unsaved one before the stored one too: a flush that commits while the device
        # row is read would otherwise hide it from both (and replay what the device has).
        unsaved = self.acks.newest(hello.device_id) if hello.device_id is not None else 0
        device = await svc.store.devices.open(claims.user_id, hello.device_id, hello.client)
        conn.caller = caller_from_claims(claims, device_id=device.id)
        head, pruned = await svc.store.events.positions(claims.user_id)
        if device.id != hello.device_id or device.created:
            unsaved = 0  # not this user's device (or a new one): another device's ack
        acked_seq = max(device.acked_seq, unsaved, self.acks.newest(device.id))
        start, resync = _resume_point(hello.last_seq, acked_seq, device.created, head, pruned)
        if start > acked_seq:  # resuming after (or resyncing at) start: the device has it
            self.acks.record(claims.user_id, device.id, start)  # else a resume by id replays it
            acked_seq = start
        conn.acked_seq = min(start, acked_seq)
        previous = self.hub.add(conn)  # before the log is read: no event can fall between
        if previous is not None:
            await previous.close(CloseCode.SUPERSEDED, "superseded by a newer connection")
        self.hub.peers.claim_device(claims.user_id, device.id)
        await self.hub.peers.watch(claims.user_id)  # listening before the log is read, too
        conn.send(
            f.Welcome(
                user_id=claims.user_id,
                device_id=device.id,
                session_id=conn.session_id,
                head_seq=head,
                heartbeat=self.settings.ws_heartbeat,
                limits=self.limits,
                resync=resync,
            ),
            "welcome",
        )
        conn.expire_at(claims.expires_at.timestamp())
        conn.start(DeliveryCursor[OutboundEvent](start, buffer_limit=self.settings.ws_max_queue))
        self._announce_presence(conn, online=True)
        return True

    async def _receive_hello(self, conn: Connection) -> f.Hello | None:
        try:
            msg = await conn.ws.receive(timeout=self.settings.ws_hello_timeout)
        except TimeoutError:
            await self._refuse(
                conn, ErrorCode.HELLO_REQUIRED, "no hello in time", CloseCode.UNAUTHORIZED
            )
            return None
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        try:
            frame = conn.codec.decode(msg.data, max_bytes=self.settings.ws_max_frame_bytes)
        except ProtocolError as exc:
            await self._refuse(conn, exc.code, exc.message, CloseCode.UNAUTHORIZED)
            return None
        if not isinstance(frame, f.Hello):
            message = "the first frame must be hello"
            await self._refuse(conn, ErrorCode.HELLO_REQUIRED, message, CloseCode.UNAUTHORIZED)
            return None
        return frame

    async def _refuse(self, conn: Connection, code: str, message: str, close: CloseCode) -> None:
        """Tell the client why (an error frame), then close: used before the session exists."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.send_frame(
                conn.codec.encode(f.Error(code=str(code), message=message)),
                WSMsgType.BINARY if conn.codec.binary else WSMsgType.TEXT,
            )
        await conn.close(close, message)

    async def _socket_count(self, user_id: UUID, device_id: UUID | None) -> int:
        """Sockets of this user on every node (this node's count when Redis cannot say).

        A device reconnecting does not count against itself: it supersedes its old socket.
        """
        return len(await self.hub.online_devices(user_id) - {str(device_id)})

    def _announce_presence(self, conn: Connection, *, online: bool) -> None:
        assert conn.caller is not None and conn.caller.device_id is not None
        self.spawn(self._set_presence(conn.caller.user_id, conn.caller.device_id, online))

    async def _set_presence(self, user_id: UUID, device_id: UUID, online: bool) -> None:
        # The presence table first, then the signal: a device that hears it and asks for
        # the list (`presence`) gets an answer that agrees with it.
        await self.hub.peers.set_presence(user_id, device_id, online)
        data = {"deviceId": device_id, "online": online}
        self.hub.signal(user_id, "presence", data, exclude_device=device_id)

    # -- read loop ----------------------------------------------------------------------

    async def _read_loop(self, conn: Connection) -> None:
        frames_in = self.metrics.frames_in
        observe = self.metrics.observe_send_stage
        max_bytes = self.settings.ws_max_frame_bytes
        perf_counter = time.perf_counter
        async for msg in conn.ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            t0 = perf_counter()
            try:
                frame = conn.codec.decode(msg.data, max_bytes=max_bytes)
            except ProtocolError as exc:
                frames_in("invalid").inc()
                conn.send(_error_frame(exc), "error")
                continue
            if isinstance(frame, f.MessageSend):
                observe("decode", perf_counter() - t0)
            frames_in(str(type(frame).__struct_config__.tag)).inc()
            if isinstance(frame, f.Ack):
                conn.on_ack(frame.seq)
            elif isinstance(frame, f.Hello):
                conn.send(
                    f.Error(code=ErrorCode.ALREADY_AUTHENTICATED, message="hello was already sent"),
                    "error",
                )
            else:
                await self._request(conn, frame)
            if conn.closing:
                break

    async def _request(self, conn: Connection, frame: f.Request) -> None:
        request_id = frame.id
        if conn.draining:
            return  # the socket closes with 1012 next; the client resends after reconnecting
        wait = conn.bucket.take()
        if wait:
            if conn.bucket.refused(wait):
                conn.close_soon(CloseCode.POLICY, "request rate abuse")
            if request_id is not None:
                conn.send(
                    f.Error(
                        id=request_id,
                        code=ErrorCode.RATE_LIMITED,
                        message="too many requests on this socket",
                        retry_after=math.ceil(wait * 1000) / 1000,  # never before a token is back
                    ),
                    "error",
                )
            return
        conn.idle.clear()
        try:
            data = await dispatch(self.services, self.hub, conn, frame)
        except ClientError as exc:
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            conn.send(
                f.Error(
                    id=request_id,
                    code=exc.code,
                    message=exc.message,
                    retry_after=retry_after,
                    details=exc.details,
                ),
                "error",
            )
            return
        except Exception:
            log.exception("request failed", extra={"type": type(frame).__name__})
            conn.send(
                f.Error(id=request_id, code=ErrorCode.INTERNAL, message="internal error"), "error"
            )
            return
        finally:
            conn.idle.set()
        if request_id is not None:
            t0 = time.perf_counter()
            conn.send(f.Reply(id=request_id, data=data), "reply")
            if isinstance(frame, f.MessageSend):
                self.metrics.observe_send_stage("reply", time.perf_counter() - t0)

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self, deadline: float) -> None:
        """Stop accepting, let queued frames out, close every socket with 1012, save acks."""
        self.accepting = False
        conns = [c for c in self._open if c.caller is not None]
        if conns:
            await asyncio.gather(
                *(
                    c.flush_and_close(CloseCode.SERVICE_RESTART, "server restarting", deadline)
                    for c in conns
                ),
                return_exceptions=True,
            )
        await self.acks.flush()


def _resume_point(
    last_seq: int | None, acked_seq: int, new_device: bool, head: int, pruned: int
) -> tuple[int, bool]:
    """Where replay starts, and whether the client must refetch state (``resync``)."""
    if last_seq is None:
        if new_device:
            return head, True  # nothing to resume: fetch state, then follow live
        last_seq = acked_seq
    if last_seq < pruned:
        return head, True  # what it missed is no longer in the log
    if last_seq > head:
        return head, True  # it has seen seqs this log never had (a restored database)
    return last_seq, False


def _error_frame(exc: ProtocolError) -> f.Error:
    details: Any = exc.details
    return f.Error(id=exc.request_id, code=exc.code, message=exc.message, details=details)
