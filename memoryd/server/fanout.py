"""Cross-node fan-out over Redis pub/sub: one channel per user, the log stays the truth.

`RedisFanout` is the hub's `Peers` when ``REDIS_URL`` is set (`memoryd.server.hub`). A
pub/sub message is one member of a tagged msgpack union, `Envelope`: events, a signal,
or a device claim.

A node subscribes to ``memoryd:user:{id}`` while it holds a socket of that user, so it
receives only its own users' traffic and decodes each message once (not once per socket,
and never for users it does not serve). A committed event is delivered to local sockets
first, then published once; other nodes hand it to their hub, which encodes it once per
codec. Redis pub/sub is at-most-once, so nothing relies on it:

* the per-socket `DeliveryCursor` turns any skipped seq into a read of the event log;
* a poller compares each local user's head seq in PostgreSQL with what their sockets have,
  every ``poll_interval_up`` while Redis is up (a lost last message) and every
  ``poll_interval_down`` while it is down (delivery by polling, at a bounded rate);
* after a reconnect every local socket catches up from the log.

Every Redis call has a timeout; Redis being down never blocks a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from memoryd.aio import wait_event
from memoryd.protocol.models import Event
from memoryd.server.hub import Hub
from memoryd.server.metrics import Metrics
from memoryd.storage.events import EventStore

log = logging.getLogger("memoryd.fanout")

CHANNEL_PREFIX = "memoryd:user:"
PRESENCE_PREFIX = "memoryd:presence:"


class EventsEnvelope(msgspec.Struct, tag="events", array_like=True):
    """Committed events of a user, as ``(seq, type, data)``: the log stays the truth."""

    node: str
    user: UUID
    events: list[tuple[int, str, Any]]


class SignalEnvelope(msgspec.Struct, tag="signal", array_like=True):
    """An ephemeral signal for the user's sockets, but not the device that caused it."""

    node: str
    user: UUID
    signal: str
    data: Any = None
    exclude_device: UUID | None = None


class ClaimEnvelope(msgspec.Struct, tag="claim", array_like=True):
    """The device connected on ``node``: any other socket of it closes with 4011."""

    node: str
    user: UUID
    device: UUID


# One pub/sub message, tagged like socket frames: [kind, node, user, ...payload].
Envelope = EventsEnvelope | SignalEnvelope | ClaimEnvelope

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Envelope).decode


def channel_for(user_id: UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{user_id}"


class RedisFanout:
    def __init__(
        self,
        client: redis_asyncio.Redis,
        hub: Hub,
        events: EventStore,
        metrics: Metrics,
        *,
        call_timeout: float = 1.0,
        poll_interval_up: float = 15.0,
        poll_interval_down: float = 1.0,
        presence_ttl: float = 30.0,
    ) -> None:
        self.node_id = uuid4().hex[:12]
        self.redis = client
        self.hub = hub
        self.events = events
        self.metrics = metrics
        self.call_timeout = call_timeout
        self.poll_interval_up = poll_interval_up
        self.poll_interval_down = poll_interval_down
        self.presence_ttl = presence_ttl
        self._key_ttl = math.ceil(presence_ttl) + 1  # a user's presence hash, unrefreshed
        self.up = False
        self._pubsub: Any = None
        self._confirmed: dict[str, asyncio.Event] = {}
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._woken = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        for coro, name in (
            (self._listen(), "fanout-listen"),
            (self._publish_loop(), "fanout-publish"),
            (self._poll_loop(), "fanout-poll"),
            (self._presence_loop(), "fanout-presence"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A loop can swallow a cancellation (Python 3.11's wait_for returns the result of
            # a call that completes as it is cancelled): cancel again until it is done.
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()

    # -- called by the hub --------------------------------------------------------------

    async def watch(self, user_id: UUID) -> None:
        """Subscribe to the user's channel (first local socket); wait for Redis to confirm.

        Waiting closes the window in which an event could be published before this node
        listens and after the socket read the log. If Redis is slow or down we go on:
        the poller covers that window.
        """
        channel = channel_for(user_id)
        confirmed = self._confirmed.get(channel)
        if confirmed is None:
            confirmed = self._confirmed[channel] = asyncio.Event()
            if self.up and self._pubsub is not None:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(self._pubsub.subscribe(channel), self.call_timeout)
        if self.up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), self.call_timeout)

    def unwatch(self, user_id: UUID) -> None:
        channel = channel_for(user_id)
        if self._confirmed.pop(channel, None) is not None and self.up:
            task = asyncio.create_task(self._unsubscribe(channel))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _unsubscribe(self, channel: str) -> None:
        # A socket of the same user may have arrived meanwhile: then stay subscribed.
        if channel not in self._confirmed and self._pubsub is not None:
            await self._safe(self._pubsub.unsubscribe(channel))

    def publish_events(self, user_id: UUID, events: Sequence[Event]) -> None:
        events_ = [(e.seq, e.type, e.data) for e in events]
        self._send(EventsEnvelope(node=self.node_id, user=user_id, events=events_))

    def publish_signal(
        self, user_id: UUID, name: str, data: Any, exclude_device: UUID | None
    ) -> None:
        self._send(
            SignalEnvelope(
                node=self.node_id,
                user=user_id,
                signal=name,
                data=data,
                exclude_device=exclude_device,
            )
        )

    def claim_device(self, user_id: UUID, device_id: UUID) -> None:
        """Tell other nodes this device connected here: their older socket of it goes (4011)."""
        self._send(ClaimEnvelope(node=self.node_id, user=user_id, device=device_id))

    # -- presence -----------------------------------------------------------------------

    async def set_presence(self, user_id: UUID, device_id: UUID, online: bool) -> None:
        key = f"{PRESENCE_PREFIX}{user_id}"
        if online:
            until = time.time() + self.presence_ttl
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, str(device_id), f"{self.node_id}:{until:.3f}")
            pipe.expire(key, self._key_ttl)  # gone with the last node that refreshed it
            coro: Any = pipe.execute()
        else:
            coro = self.redis.hdel(key, str(device_id))
        await self._safe(coro)

    async def online_devices(self, user_id: UUID) -> list[str] | None:
        """Device ids online anywhere (None when Redis cannot say)."""
        try:
            entries = await asyncio.wait_for(
                self.redis.hgetall(f"{PRESENCE_PREFIX}{user_id}"), self.call_timeout
            )
        except (RedisError, OSError, TimeoutError):
            return None
        now = time.time()
        return [_text(device) for device, value in entries.items() if _alive(value, now)]

    # -- loops --------------------------------------------------------------------------

    def _send(self, envelope: Envelope) -> None:
        if not self.up:
            return  # other nodes poll the log while Redis is down
        try:
            self._outbox.put_nowait((channel_for(envelope.user), _encode(envelope)))
        except asyncio.QueueFull:
            self.metrics.redis_publish_dropped.inc()  # the log and the poller cover it

    async def _publish_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < 512:
                batch.append(self._outbox.get_nowait())
            pipe = self.redis.pipeline(transaction=False)
            for channel, payload in batch:
                pipe.publish(channel, payload)
            try:
                await asyncio.wait_for(pipe.execute(), self.call_timeout)
                self.metrics.redis_messages_published.inc(len(batch))
            except (RedisError, OSError, TimeoutError) as exc:
                self.metrics.redis_publish_dropped.inc(len(batch))
                log.warning("redis publish failed: %r", exc)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await asyncio.wait_for(pubsub.ping(), self.call_timeout)
                channels = list(self._confirmed)
                for event in self._confirmed.values():
                    event.clear()
                if channels:
                    await asyncio.wait_for(pubsub.subscribe(*channels), self.call_timeout)
                else:
                    await asyncio.wait_for(pubsub.subscribe("memoryd:node:" + self.node_id), 1)
                self._pubsub = pubsub
                self._set_up(True)
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_message(message)
            except (RedisError, OSError, TimeoutError) as exc:
                if self.up:
                    log.warning("redis connection lost (%r); delivering by polling the log", exc)
                self._set_up(False)
            finally:
                self._pubsub = None
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _set_up(self, up: bool) -> None:
        was = self.up
        self.up = up
        self.metrics.redis_up.set(1 if up else 0)
        if up and not was:
            log.info("redis fan-out is live")
            self.hub.catch_up_all()  # whatever was published while we were away
        self._woken.set()

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        raw_channel = message.get("channel")
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "subscribe":
            confirmed = self._confirmed.get(channel)
            if confirmed is not None:
                confirmed.set()
            return
        if kind != "message":
            return
        try:
            envelope = _decode(message["data"])
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignoring a malformed fan-out message on %s", channel)
            return
        if envelope.node == self.node_id:
            return
        self.metrics.redis_messages_received.inc()
        match envelope:
            case EventsEnvelope(user=user_id, events=events):
                self.hub.deliver_local(
                    user_id, [Event(seq=s, type=t, data=d, created_at=_EPOCH) for s, t, d in events]
                )
            case SignalEnvelope(user=user_id, signal=name, data=data, exclude_device=exclude):
                self.hub.signal_local(user_id, name, data, exclude_device=exclude)
            case ClaimEnvelope(device=device_id):
                self.hub.supersede_local(device_id)

    async def _poll_loop(self) -> None:
        """Compare each local user's head in the log with what their sockets have."""
        while True:
            interval = self.poll_interval_up if self.up else self.poll_interval_down
            self._woken.clear()
            await wait_event(self._woken, interval)
            users = self.hub.local_users()
            if not users:
                continue
            try:
                heads = await self.events.heads(users)
            except Exception:
                log.exception("polling the event log failed")
                continue
            for user_id, head in heads.items():
                self.hub.catch_up_to(user_id, head)

    async def _presence_loop(self) -> None:
        """Refresh this node's devices; expire devices of nodes that died."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            if not self.up:
                continue
            now = time.time()
            until = f"{self.node_id}:{now + self.presence_ttl:.3f}"
            pipe = self.redis.pipeline(transaction=False)
            users = self.hub.local_users()
            for user_id in users:
                for device_id in self.hub.local_devices(user_id):
                    pipe.hset(f"{PRESENCE_PREFIX}{user_id}", str(device_id), until)
                pipe.expire(f"{PRESENCE_PREFIX}{user_id}", self._key_ttl)
                pipe.hgetall(f"{PRESENCE_PREFIX}{user_id}")
            try:
                results = await asyncio.wait_for(pipe.execute(), self.call_timeout * 2)
            except (RedisError, OSError, TimeoutError):
                continue
            tables = [r for r in results if isinstance(r, dict)]
            for user_id, table in zip(users, tables, strict=False):
                for device, value in table.items():
                    if not _alive(value, now):
                        key = f"{PRESENCE_PREFIX}{user_id}"
                        # The node whose HDEL removed it tells the user's devices on every node.
                        if await self._safe(self.redis.hdel(key, device)):
                            data = {"deviceId": _text(device), "online": False}
                            self.hub.signal(user_id, "presence", data)

    async def _safe(self, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.call_timeout)
        except (RedisError, OSError, TimeoutError):
            return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alive(entry: bytes | str, now: float) -> bool:
    """A presence entry is ``node:expiry``; it counts until its expiry."""
    try:
        return float(_text(entry).rsplit(":", 1)[1]) > now
    except (IndexError, ValueError):
        return False


_EPOCH = datetime.fromtimestamp(0, UTC)  # created_at does not travel: frames omit it
