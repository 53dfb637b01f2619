"""Failures across nodes: a node SIGKILLed mid-stream, presence after a node dies, and a
Redis outage mid-stream. The event log in PostgreSQL is the truth: whatever happens to a
node or to Redis, every device receives every event exactly once, in seq order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from memoryd.client import ClientEvent
from tests.multinode.conftest import (
    Cluster,
    Device,
    Node,
    PrivateRedis,
    assert_exactly_once_in_order,
    device,
    eventually,
    signal_where,
)

pytestmark = pytest.mark.redis

PRESENCE_TTL = 3


async def online(client: Device) -> set[str]:
    reply = await client.request("presence")
    return {d["deviceId"] for d in reply["devices"] if d["online"]}


@asynccontextmanager
async def collecting(client: Device) -> AsyncIterator[list[ClientEvent]]:
    """Every event the client hands out, collected in the background."""
    events: list[ClientEvent] = []

    async def run() -> None:
        async for event in client.events():
            events.append(event)

    task = asyncio.create_task(run())
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def message_ids(events: list[ClientEvent]) -> set[str]:
    return {str(e.data["id"]) for e in events if e.event == "message.created"}


# -- a node dies ----------------------------------------------------------------------------


async def test_a_killed_nodes_device_resumes_on_another_node_with_nothing_lost(
    cluster: Cluster,
) -> None:
    a, b, c = await cluster.start(3)
    user = await b.api.register()
    token = user.token
    assert token is not None
    async with (
        device(b.ws_url, token) as streamer,
        device(a.ws_url, token, codec="msgpack") as victim,
        collecting(streamer) as streamed,
    ):
        head = victim.welcome.head_seq  # type: ignore[union-attr]
        memory = await streamer.request("memory.create", title="mid-stream")
        rest_c = c.api.as_user(token)
        sent: list[str] = []

        async def send(i: int) -> None:
            if i % 3 == 2:  # every third over REST on C, the rest over the socket on B
                resp = await rest_c.post(
                    f"/api/memories/{memory['id']}/messages",
                    json={"content": f"m{i}", "clientMsgId": f"m{i}"},
                )
                assert resp.status == 201, resp.body
                sent.append(str(resp.body["message"]["id"]))
            else:
                reply = await streamer.request(
                    "message.send", memory_id=memory["id"], client_msg_id=f"m{i}", content=str(i)
                )
                sent.append(str(reply["id"]))

        async def stream(first: int, count: int) -> None:
            for i in range(first, first + count):
                await send(i)
                await asyncio.sleep(0.01)

        streaming = asyncio.create_task(stream(0, 45))
        await eventually(lambda: len(victim.wire) >= 10)
        await a.kill()  # mid-stream: no close frame, no goodbye
        assert not streaming.done()
        before_kill = []
        while victim.pending_events():
            before_kill.append(await victim.next_event())
        resume_from = victim.last_seq
        assert resume_from is not None
        await victim.close()  # its SDK would keep knocking on the dead node's door

        # The device comes back on C (which held no socket of this user) while B streams on.
        async with (
            device(
                c.ws_url, token, codec="msgpack", device_id=victim.device_id, last_seq=resume_from
            ) as resumed,
            collecting(resumed) as after_kill,
        ):
            await streaming
            await stream(45, 10)  # and live, after the resume
            total = 1 + len(sent)
            last = head + total
            await eventually(lambda: bool(after_kill) and after_kill[-1].seq >= last, 15)
            await eventually(lambda: bool(streamed) and streamed[-1].seq >= last, 15)
            await asyncio.sleep(0.3)  # anything extra would arrive now

            got = [e.seq for e in before_kill + after_kill]
            assert_exactly_once_in_order(got, head + 1, last)
            assert_exactly_once_in_order(victim.wire + resumed.wire, head + 1, last)
            assert 0 < len(victim.wire) < total  # the kill did fall mid-stream
            assert message_ids(before_kill + after_kill) == set(sent)
            assert_exactly_once_in_order([e.seq for e in streamed], head + 1, last)
            assert_exactly_once_in_order(streamer.wire, head + 1, last)


async def test_presence_drops_a_dead_nodes_device_within_the_ttl(
    cluster: Cluster, redis_url: str
) -> None:
    a, b, c = await cluster.start(3, MEMORYD_PRESENCE_TTL=str(PRESENCE_TTL))
    user = await a.api.register()
    loner = await a.api.register()  # a user whose only device is on the node that dies
    token = user.token
    assert token is not None and loner.token is not None
    async with (
        device(a.ws_url, token) as on_a,
        device(b.ws_url, token) as on_b,
        device(c.ws_url, token, codec="msgpack") as on_c,
        device(a.ws_url, loner.token),
    ):
        everyone = {on_a.device_id, on_b.device_id, on_c.device_id}

        async def all_online() -> bool:
            return await online(on_b) == everyone and await online(on_c) == everyone

        await eventually(all_online)
        # Live a little past a refresh period, so the entries on Redis are refreshed ones.
        await asyncio.sleep(PRESENCE_TTL / 3 + 0.2)
        assert await online(on_b) == everyone

        dead = on_a.device_id
        killed_at = time.monotonic()
        await a.kill()

        async def dead_gone() -> bool:
            return dead not in await online(on_b) and dead not in await online(on_c)

        took = await eventually(dead_gone, timeout=PRESENCE_TTL + 5, interval=0.1)
        # within the TTL (+ this loop's polling and two requests' worth of slack)
        assert took <= PRESENCE_TTL + 1.0, f"listed for {took:.2f} s after its node died"
        assert await online(on_b) == {on_b.device_id, on_c.device_id}

        # Both surviving devices are told, whichever node noticed first.
        def offline(data: Any) -> bool:
            return str(data["deviceId"]) == dead and data["online"] is False

        deadline = PRESENCE_TTL * 4 / 3 + 2 - (time.monotonic() - killed_at)
        for survivor in (on_b, on_c):
            await signal_where(survivor, "presence", offline, timeout=max(deadline, 0.5))

        # The entry is gone from Redis, not just expired; and the presence of a user no
        # surviving node serves goes away on its own.
        client = redis_asyncio.from_url(redis_url)
        try:
            key = f"memoryd:presence:{user.user['id']}"  # type: ignore[attr-defined]
            assert not await client.hexists(key, dead)
            assert await client.hexists(key, on_b.device_id)  # type: ignore[arg-type]
            loner_key = f"memoryd:presence:{loner.user['id']}"  # type: ignore[attr-defined]

            async def loner_key_gone() -> bool:
                return not await client.exists(loner_key)

            await eventually(
                loner_key_gone, timeout=PRESENCE_TTL + 3 - (time.monotonic() - killed_at)
            )
        finally:
            await client.aclose()


# -- Redis goes away and comes back ---------------------------------------------------------


def fanout_up(nodes: list[Node], value: float) -> Callable[[], Any]:
    async def check() -> bool:
        return all([await n.metric("redis_fanout_up") == value for n in nodes])

    return check


async def test_a_redis_outage_mid_stream_loses_and_duplicates_nothing(
    cluster: Cluster, private_redis: Callable[[], PrivateRedis]
) -> None:
    redis_server = private_redis()
    nodes = await cluster.start(
        3,
        redis_url=redis_server.url,
        MEMORYD_REDIS_POLL_INTERVAL="0.2",
        MEMORYD_RATE_LIMIT_API="100000/60",  # the shared limiter is on the REST path
    )
    a, b, c = nodes
    user = await a.api.register()
    token = user.token
    assert token is not None
    async with (
        device(a.ws_url, token) as on_a,
        device(b.ws_url, token, codec="msgpack") as on_b,
        collecting(on_a) as got_a,
        collecting(on_b) as got_b,
        contextlib.AsyncExitStack() as later,
    ):
        head = on_a.welcome.head_seq  # type: ignore[union-attr]
        memory = await on_a.request("memory.create", title="outage")
        rest_b = b.api.as_user(token)
        sent: list[str] = []
        stop = asyncio.Event()

        async def send_over_socket_on_a(key: str) -> str:
            reply = await on_a.request(
                "message.send", memory_id=memory["id"], client_msg_id=key, content=key
            )
            return str(reply["id"])

        async def send_over_rest_on_b(key: str) -> str:
            resp = await rest_b.post(
                f"/api/memories/{memory['id']}/messages",
                json={"content": key, "clientMsgId": key},
            )
            assert resp.status == 201, resp.body
            return str(resp.body["message"]["id"])

        async def stream() -> None:
            i = 0
            while not stop.is_set():
                send = send_over_socket_on_a if i % 2 == 0 else send_over_rest_on_b
                sent.append(await send(f"s{i}"))
                i += 1
                await asyncio.sleep(0.02)

        streaming = asyncio.create_task(stream())
        await eventually(lambda: len(sent) >= 10)

        # -- Redis dies mid-stream
        redis_server.stop()
        down_at = time.monotonic()
        await eventually(fanout_up(nodes, 0.0))

        # Each node still delivers the other's commits: by polling the log.
        from_a = await send_over_socket_on_a("down-a")
        from_b = await send_over_rest_on_b("down-b")
        sent.extend([from_a, from_b])
        await eventually(lambda: from_a in message_ids(got_b), timeout=3)
        await eventually(lambda: from_b in message_ids(got_a), timeout=3)

        # REST keeps working; health says the node is degraded, Redis unhealthy.
        health = await a.api.get("/health")
        assert health.status == 200 and health.body["status"] == "degraded"
        assert health.body["checks"]["redis"] == "unhealthy"
        assert health.body["checks"]["database"] == "healthy"
        listed = await rest_b.get("/api/memories")
        assert listed.status == 200
        assert memory["id"] in [m["id"] for m in listed.body["memories"]]

        # A device can still connect, to a node that held no socket of this user.
        on_c = await later.enter_async_context(device(c.ws_url, token))
        got_c = await later.enter_async_context(collecting(on_c))
        c_from = on_c.welcome.head_seq + 1  # type: ignore[union-attr]
        await eventually(lambda: len(got_c) >= 5, timeout=5)  # ... and is served by polling

        sent_while_down = len(sent)
        await eventually(lambda: len(sent) >= sent_while_down + 10, timeout=10)
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - down_at)))
        assert not streaming.done()
        assert all([await n.metric("redis_fanout_up") == 0.0 for n in nodes])

        # -- Redis comes back on the same port (empty); the nodes return to pub/sub
        redis_server.start()
        await eventually(fanout_up(nodes, 1.0), timeout=15)
        received = {n.name: await n.metric("redis_messages_received_total") for n in nodes}
        sent_when_back = len(sent)
        await eventually(lambda: len(sent) >= sent_when_back + 10, timeout=10)
        stop.set()
        await streaming

        total = 1 + len(sent)
        last = head + total
        for got in (got_a, got_b, got_c):
            await eventually(lambda got=got: bool(got) and got[-1].seq >= last, timeout=10)
        await asyncio.sleep(0.3)  # anything extra would arrive now
        for dev, got in ((on_a, got_a), (on_b, got_b)):
            assert_exactly_once_in_order([e.seq for e in got], head + 1, last)
            assert_exactly_once_in_order(dev.wire, head + 1, last)
            assert message_ids(got) == set(sent)
            assert dev.connections == 1  # the sockets themselves never dropped
        assert_exactly_once_in_order([e.seq for e in got_c], c_from, last)
        assert_exactly_once_in_order(on_c.wire, c_from, last)
        # back on pub/sub: every node decoded the others' messages from Redis again (C on
        # the channel it first asked for while Redis was down)
        for node in nodes:
            assert await node.metric("redis_messages_received_total") > received[node.name]
        health = await a.api.get("/health")
        assert health.status == 200, health.body


# -- shutdown -------------------------------------------------------------------------------


async def test_sigterm_while_the_fanout_publishes_still_exits_promptly(cluster: Cluster) -> None:
    """A SIGTERM that lands while a node publishes (here: the presence signals of sockets
    that just closed) must not hang the shutdown on a fan-out loop that swallowed its
    cancellation."""
    (node,) = await cluster.start(1)
    user = await node.api.register()
    assert user.token is not None
    for _ in range(3):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(8):
                await stack.enter_async_context(device(node.ws_url, user.token))
        started = time.monotonic()
        await node.terminate(timeout=20)
        took = time.monotonic() - started
        assert node.proc is not None and node.proc.returncode == 0, node.log_tail()
        assert took < 2 + 3, f"SIGTERM took {took:.1f} s (MEMORYD_SHUTDOWN_TIMEOUT=2)"
        await node.start()
