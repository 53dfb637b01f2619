"""Cross-node fan-out with real node processes, one PostgreSQL and one real Redis.

Three nodes A, B and C; a user's devices spread over them see every event exactly once and
in seq order whichever node committed it; signals cross nodes; a node subscribes only to
the users it holds sockets of; presence, device take-over (4011), rate limits and the
per-user socket cap are shared through Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio

from memoryd.client import HandshakeError
from memoryd.protocol.errors import CloseCode
from tests.helpers import Api
from tests.multinode.conftest import (
    Cluster,
    Device,
    Node,
    assert_exactly_once_in_order,
    cluster_of,
    device,
    eventually,
    signal_where,
    take,
)

pytestmark = pytest.mark.redis


@pytest_asyncio.fixture(scope="module")
async def module_cluster(
    database_url: str, redis_url: str, node_data_dir: Path
) -> AsyncIterator[Cluster]:
    async with cluster_of(database_url, redis_url, node_data_dir) as c:
        yield c


@pytest_asyncio.fixture(scope="module")
async def trio(module_cluster: Cluster) -> list[Node]:
    """Nodes A, B, C with default settings, shared by the module's tests."""
    return await module_cluster.start(3)


@pytest_asyncio.fixture(scope="module")
async def limited(module_cluster: Cluster) -> list[Node]:
    """Two nodes sharing an API limit of 5 calls a minute and 2 sockets per user."""
    return await module_cluster.start(
        2, MEMORYD_RATE_LIMIT_API="5/60", MEMORYD_WS_MAX_SOCKETS_PER_USER="2"
    )


@pytest_asyncio.fixture
async def rds(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


def token_of(user: Api) -> str:
    assert user.token is not None
    return user.token


def user_id_of(user: Api) -> str:
    return str(user.user["id"])  # type: ignore[attr-defined]


async def online(client: Device) -> dict[str, dict[str, Any]]:
    reply = await client.request("presence")
    return {d["deviceId"]: d for d in reply["devices"]}


# -- delivery -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_devices_on_three_nodes_see_every_event_once_in_order(
    trio: list[Node], codec: str
) -> None:
    a, b, c = trio
    user = await a.api.register()
    other = await b.api.register()
    token = token_of(user)
    async with (
        device(a.ws_url, token, codec=codec) as on_a,
        device(b.ws_url, token, codec=codec) as on_b,
        device(c.ws_url, token, codec=codec) as on_c,
        device(a.ws_url, token_of(other), codec=codec) as other_a,
        device(c.ws_url, token_of(other), codec=codec) as other_c,
    ):
        head = on_a.welcome.head_seq  # type: ignore[union-attr]
        assert on_b.welcome.head_seq == on_c.welcome.head_seq == head  # type: ignore[union-attr]
        memory = await on_a.request("memory.create", title="across nodes")
        rest_b = b.api.as_user(token)

        async def over_socket_on_a(i: int) -> str:
            sent = await on_a.request(
                "message.send", memory_id=memory["id"], client_msg_id=f"a-{i}", content=f"a{i}"
            )
            return str(sent["id"])

        async def over_rest_on_b(i: int) -> str:
            resp = await rest_b.post(
                f"/api/memories/{memory['id']}/messages",
                json={"content": f"b{i}", "clientMsgId": f"b-{i}"},
            )
            assert resp.status == 201, resp.body
            return str(resp.body["message"]["id"])

        # Interleaved commits on two nodes, as fast as they go.
        sent_ids = await asyncio.gather(
            *(over_socket_on_a(i) for i in range(12)), *(over_rest_on_b(i) for i in range(12))
        )
        edited = await on_c.request("message.edit", message_id=sent_ids[0], content="edited")
        assert edited["content"] == "edited"
        total = 1 + len(sent_ids) + 1  # memory.created, the messages, message.updated

        seen = {}
        for name, dev in (("A", on_a), ("B", on_b), ("C", on_c)):
            events = await take(dev, total)
            assert_exactly_once_in_order([e.seq for e in events], head + 1, head + total)
            # and on the wire too: the server never sent one twice
            assert_exactly_once_in_order(dev.wire, head + 1, head + total)
            seen[name] = [(e.seq, e.event, e.data.get("id")) for e in events]
        assert seen["A"] == seen["B"] == seen["C"]
        kinds = [k for _, k, _ in seen["A"]]
        assert kinds[0] == "memory.created" and kinds[-1] == "message.updated"
        assert sorted(i for _, k, i in seen["A"] if k == "message.created") == sorted(sent_ids)

        await asyncio.sleep(0.3)  # nothing more comes: exactly once
        for dev in (on_a, on_b, on_c):
            assert dev.pending_events() == 0
        # the other user's devices, on the same nodes, saw none of it
        assert other_a.wire == other_c.wire == []
        assert other_a.pending_events() == other_c.pending_events() == 0


async def test_typing_signal_crosses_nodes(trio: list[Node]) -> None:
    a, b, c = trio
    user = await a.api.register()
    other = await a.api.register()
    token = token_of(user)
    async with (
        device(a.ws_url, token) as on_a,
        device(b.ws_url, token, codec="msgpack") as on_b,
        device(c.ws_url, token) as on_c,
        device(b.ws_url, token_of(other)) as other_b,
    ):
        memory = await on_a.request("memory.create", title="typing")
        await on_a.request("typing", memory_id=memory["id"])

        def typing_from_a(data: Any) -> bool:
            return str(data["deviceId"]) == on_a.device_id

        for dev in (on_b, on_c):
            signal = await signal_where(dev, "typing", typing_from_a)
            assert signal.data["memoryId"] == memory["id"]
            assert signal.data["userId"] == user_id_of(user)
        with pytest.raises(TimeoutError):  # not echoed to the typing device
            await signal_where(on_a, "typing", timeout=0.5)
        with pytest.raises(TimeoutError):  # and never to another user
            await signal_where(other_b, "typing", timeout=0.1)


async def test_a_node_receives_only_the_traffic_of_its_users(
    trio: list[Node], rds: redis_asyncio.Redis
) -> None:
    a, b, c = trio
    user = await a.api.register()
    token = token_of(user)
    channel = f"memoryd:user:{user_id_of(user)}"
    async with device(a.ws_url, token) as on_a, device(b.ws_url, token) as on_b:
        # one subscriber per node holding a socket of the user: A and B, not C
        assert await rds.pubsub_numsub(channel) == [(channel.encode(), 2)]
        listed = await rds.pubsub_channels("memoryd:user:*")
        assert channel.encode() in listed

        received_before = {n.name: await n.metric("redis_messages_received_total") for n in trio}
        memory = await on_a.request("memory.create", title="two nodes")
        for i in range(5):
            await on_b.request(
                "message.send", memory_id=memory["id"], client_msg_id=f"m{i}", content=str(i)
            )
        await take(on_a, 6)
        await take(on_b, 6)
        received = {
            n.name: await n.metric("redis_messages_received_total") - received_before[n.name]
            for n in trio
        }
        assert received[a.name] >= 5  # B's commits reached A over Redis
        assert received[b.name] >= 1  # and A's reached B
        assert received[c.name] == 0  # C decoded nothing: it holds no socket of this user

    # the last socket on a node gone, the node unsubscribes
    async def nobody_listens() -> bool:
        return await rds.pubsub_numsub(channel) == [(channel.encode(), 0)]

    await eventually(nobody_listens)


# -- presence and device take-over ----------------------------------------------------------


async def test_presence_lists_the_devices_of_every_node(trio: list[Node]) -> None:
    a, b, c = trio
    user = await a.api.register()
    token = token_of(user)
    async with device(a.ws_url, token) as on_a, device(b.ws_url, token) as on_b:
        async with device(c.ws_url, token) as on_c:
            # the online signal of C's device reaches the devices on A and B
            for dev in (on_a, on_b):
                signal = await signal_where(
                    dev, "presence", lambda d: str(d["deviceId"]) == on_c.device_id
                )
                assert signal.data["online"] is True
            everyone = {on_a.device_id, on_b.device_id, on_c.device_id}

            async def all_three() -> bool:
                return set(await online(on_b)) == everyone

            await eventually(all_three)
            listed = await online(on_b)
            assert all(d["online"] is True for d in listed.values())
            assert [k for k, d in listed.items() if d["thisDevice"]] == [on_b.device_id]
            assert set(await online(on_a)) == set(await online(on_c)) == everyone

        # C's device left: an offline signal on the other nodes, and gone from the list
        gone = on_c.device_id
        for dev in (on_a, on_b):
            signal = await signal_where(dev, "presence", lambda d: str(d["deviceId"]) == gone)
            assert signal.data["online"] is False
        assert set(await online(on_a)) == {on_a.device_id, on_b.device_id}


async def test_the_same_device_on_another_node_closes_the_old_socket_with_4011(
    trio: list[Node],
) -> None:
    a, b, _ = trio
    user = await a.api.register()
    token = token_of(user)
    async with device(a.ws_url, token) as old, device(a.ws_url, token) as watcher:
        memory = await old.request("memory.create", title="take-over")
        await take(old, 1)
        await take(watcher, 1)
        async with device(b.ws_url, token, device_id=old.device_id, last_seq=old.last_seq) as new:
            await eventually(lambda: old.close_code == CloseCode.SUPERSEDED)
            assert new.device_id == old.device_id
            await new.request(
                "message.send", memory_id=memory["id"], client_msg_id="after", content="x"
            )
            event = await new.next_event()
            assert event.event == "message.created"
            assert (await watcher.next_event()).seq == event.seq
            await asyncio.sleep(0.2)
            assert old.pending_events() == 0  # the superseded session stays closed
            assert old.connections == 1
            # the device is online (on B): its old socket going away did not say otherwise
            await asyncio.sleep(0.3)
            listed = await online(new)
            assert listed[str(new.device_id)]["thisDevice"] is True
            assert set(await online(watcher)) == {new.device_id, watcher.device_id}


# -- shared limits --------------------------------------------------------------------------


async def test_the_api_rate_limit_is_shared_by_the_nodes(limited: list[Node]) -> None:
    a, b = limited
    user = await a.api.register()
    if time.time() % 60 > 50:  # windows are aligned on the minute: do not straddle one
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    remaining = []
    for node in (a, a, a, b, b):
        resp = await node.api.as_user(user.token).get("/api/memories")
        assert resp.status == 200, resp.body
        remaining.append(resp.header("RateLimit-Remaining"))
    assert remaining == ["4", "3", "2", "1", "0"]
    resp = await b.api.as_user(user.token).get("/api/memories")
    assert resp.status == 429
    assert resp.error_code == "rate_limited"
    assert int(resp.header("Retry-After") or 0) >= 1
    assert (await a.api.as_user(user.token).get("/api/memories")).status == 429
    # another user has a window of their own
    fresh = await b.api.register()
    assert (await a.api.as_user(fresh.token).get("/api/memories")).status == 200


async def test_the_socket_cap_counts_sockets_on_every_node(limited: list[Node]) -> None:
    a, b = limited
    user = await a.api.register()
    token = token_of(user)
    async with device(a.ws_url, token) as first, device(b.ws_url, token) as second:

        async def both_present() -> bool:
            return len(await online(first)) == 2

        await eventually(both_present)
        for node in (a, b):
            with pytest.raises(HandshakeError) as refused:
                async with device(node.ws_url, token, reconnect=False):
                    pass
            assert refused.value.close_code == CloseCode.POLICY
            assert refused.value.code == "rate_limited"
        # a device already counted may move: it does not count against itself
        async with device(a.ws_url, token, device_id=second.device_id) as moved:
            await eventually(lambda: second.close_code == CloseCode.SUPERSEDED)
            assert moved.device_id == second.device_id

    # both gone: a new device is welcome again
    async def accepted() -> bool:
        try:
            async with device(b.ws_url, token, device_id=str(uuid.uuid4())):
                return True
        except HandshakeError:
            return False

    await eventually(accepted)
