"""Resume and idempotency over /ws: nothing missed, nothing twice, across drops, fresh
connections, acks stored by the server, pruned logs and a real server restart (SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.client import Client, ClientEvent, Disconnected, RequestError
from memoryd.config import Settings
from memoryd.storage.database import Database
from memoryd.storage.devices import DeviceStore
from memoryd.storage.events import EventStore
from tests.conftest import RunningServer, StartServer
from tests.e2e.test_ws_session import device, eventually, new_memory, take, ws_url
from tests.helpers import Api

pytestmark = pytest.mark.storage


@pytest.fixture
def url(server: RunningServer) -> str:
    return ws_url(server)


@pytest_asyncio.fixture
async def user(api: Api) -> Api:
    return await api.register()


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


async def send(client: Client, memory_id: str, key: str, content: str | None = None) -> Any:
    return await client.request(
        "message.send", memory_id=memory_id, client_msg_id=key, content=content or key
    )


def contents(events: list[ClientEvent]) -> list[str]:
    return [e.data["content"] for e in events]


def numbered(events: list[ClientEvent], after: int) -> bool:
    return [e.seq for e in events] == list(range(after + 1, after + 1 + len(events)))


# -- resume -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_auto_reconnect_after_a_drop_resumes_exactly_the_missed_events(
    url: str, user: Api, codec: str
) -> None:
    async with device(url, user.token, codec=codec) as a, device(url, user.token) as b:
        memory = await new_memory(b)
        await a.next_event()
        start = a.last_seq
        assert start is not None
        expected = []
        for round_ in range(5):  # drop again and again: each switch-over is a chance to slip
            await a.disconnect()
            for i in range(10):
                if i == 5:  # the rest while the new socket replays, then live
                    await eventually(lambda n=round_ + 2: a.connections == n)
                key = f"{round_}-{i}"
                await send(b, memory["id"], key)
                expected.append(key)
        got = await take(a, 50)
        assert numbered(got, start)
        assert contents(got) == expected
        assert a.connections == 6
        # Nothing came twice off the wire either, across all the reconnects.
        assert a.wire == [start, *range(start + 1, start + 51)]
        await send(b, memory["id"], "marker")
        assert (await a.next_event()).data["content"] == "marker"
        assert a.pending_events() == 0


async def test_a_fresh_connection_resumes_from_its_last_seq(url: str, user: Api) -> None:
    async with device(url, user.token) as b:
        async with device(url, user.token, codec="msgpack") as a:
            memory = await new_memory(b)
            await a.next_event()
            device_id, last = a.device_id, a.last_seq
            assert last is not None
        for i in range(50):
            await send(b, memory["id"], f"gone-{i}")
        async with device(
            url, user.token, codec="msgpack", device_id=device_id, last_seq=last
        ) as again:
            assert again.welcome is not None and not again.welcome.resync
            assert again.welcome.head_seq == last + 50
            got = await take(again, 50)
            assert numbered(got, last)
            assert contents(got) == [f"gone-{i}" for i in range(50)]
            await send(b, memory["id"], "live")
            assert (await again.next_event()).data["content"] == "live"
            assert again.wire == list(range(last + 1, last + 52))


async def test_a_fresh_connection_with_only_its_device_id_resumes_from_its_stored_ack(
    start_server: StartServer, http: aiohttp.ClientSession, db: Database
) -> None:
    server = await start_server(ack_flush_interval=0.1)
    url = ws_url(server)
    user = await Api(http, server.url).register()
    user_id = uuid.UUID(user.user["id"])  # type: ignore[attr-defined]
    devices = DeviceStore(db)
    async with device(url, user.token) as b:
        async with device(url, user.token, reconnect=False) as a:
            memory = await new_memory(b)
            for i in range(3):
                await send(b, memory["id"], f"seen-{i}")
            seen = await take(a, 4)
            assert a.device_id is not None
            device_id = uuid.UUID(a.device_id)
            # Acks reach the database while the socket is open (every ack_flush_interval).
            acked = seen[-1].seq

            async def stored() -> bool:
                return await devices.acked_seq(user_id, device_id) == acked

            await eventually(stored, timeout=3)
            await a.disconnect()  # abrupt: no goodbye
            await eventually(lambda: a.close_code is not None)
        for i in range(50):
            await send(b, memory["id"], f"missed-{i}")
        async with device(url, user.token, device_id=str(device_id)) as again:
            assert again.welcome is not None and not again.welcome.resync
            got = await take(again, 50)
            assert numbered(got, acked)
            assert contents(got) == [f"missed-{i}" for i in range(50)]
            assert again.wire == list(range(acked + 1, acked + 51))


async def test_a_closed_device_coming_straight_back_by_device_id_gets_nothing_twice(
    url: str, user: Api
) -> None:
    """Closing acknowledges what was handed out; the server resumes from that ack even
    before it has reached the database."""
    async with device(url, user.token) as b:
        memory = await new_memory(b)
        async with device(url, user.token) as a:
            await send(b, memory["id"], "first")
            assert contents(await take(a, 1)) == ["first"]
        for round_ in range(12):
            assert a.close_code == 1000
            await send(b, memory["id"], f"away-{round_}")
            async with device(url, user.token, device_id=a.device_id) as a:
                # Exactly what was sent while it was away: had the server resumed from an
                # older ack, "first" and earlier "away-" messages would come first.
                assert contents(await take(a, 1)) == [f"away-{round_}"]
                assert len(a.wire) == 1


async def test_a_resync_or_a_resume_by_last_seq_counts_as_acknowledged(url: str, user: Api) -> None:
    async with device(url, user.token) as b:
        memory = await new_memory(b)
        async with device(url, user.token) as a:  # a new device starts at the head
            assert a.welcome is not None and a.welcome.resync
        async with device(url, user.token, device_id=a.device_id) as again:
            await send(b, memory["id"], "one")
            assert contents(await take(again, 1)) == ["one"]  # not memory.created again
        await send(b, memory["id"], "two")
        head = (await take(b, 3))[-1].seq
        # The app had everything up to the head (say, from REST) and left before any event.
        async with device(url, user.token, device_id=a.device_id, last_seq=head) as third:
            assert third.welcome is not None and third.welcome.head_seq == head
        async with device(url, user.token, device_id=a.device_id) as fourth:
            await send(b, memory["id"], "three")
            assert contents(await take(fourth, 1)) == ["three"]  # "two" is not replayed
            assert fourth.wire == [head + 1]


async def test_an_event_looks_the_same_live_and_replayed(url: str, user: Api) -> None:
    for codec in ("json", "msgpack"):
        async with device(url, user.token, codec=codec) as a:
            start = a.last_seq
            memory = await new_memory(a, f"same in {codec}")
            await send(a, memory["id"], f"hello {codec}")
            live = await take(a, 2)
        async with device(url, user.token, codec=codec, last_seq=start) as again:
            replayed = await take(again, 2)
        assert replayed == live


# -- idempotent sends and per-memory order ----------------------------------------------


async def test_one_client_msg_id_stores_one_message_however_often_it_is_sent(
    url: str, user: Api
) -> None:
    async with (
        device(url, user.token) as a,
        device(url, user.token, codec="msgpack") as b,
        device(url, user.token) as c,
    ):
        memory = await new_memory(a)
        path = f"/api/memories/{memory['id']}/messages"

        async def over_rest() -> Any:
            resp = await user.post(path, json={"content": "once", "clientMsgId": "dup"})
            assert resp.status == 201, resp.body
            return resp.body["message"]

        # All at once, from three sockets and REST: they race for the unique index.
        raced = await asyncio.gather(
            *(send(d, memory["id"], "dup", "once") for d in (a, a, b, b, c)), over_rest()
        )
        # Again, one after another, on the socket and over REST.
        again = [await send(a, memory["id"], "dup", "once"), await send(c, memory["id"], "dup")]
        resp = await user.post(path, json={"content": "once", "clientMsgId": "dup"})
        assert resp.header("Idempotent-Replayed") == "true"
        replies = [*raced, *again, resp.body["message"]]
        assert len({r["id"] for r in replies}) == 1
        assert {(r["seq"], r["content"], r["clientMsgId"]) for r in replies} == {(1, "once", "dup")}

        history = await a.request("message.history", memory_id=memory["id"])
        assert [m["clientMsgId"] for m in history["messages"]] == ["dup"]
        got = await user.get(f"/api/memories/{memory['id']}")
        assert (got.body["memory"]["messageCount"], got.body["memory"]["lastMessageSeq"]) == (1, 1)
        # One message.created on every device, then the next event is the next change.
        await send(b, memory["id"], "after")
        for d in (a, b, c):
            events = await take(d, 3)
            assert [(e.event, e.data.get("clientMsgId")) for e in events] == [
                ("memory.created", None),
                ("message.created", "dup"),
                ("message.created", "after"),
            ]
            assert events[2].data["seq"] == 2  # the losers' seqs were rolled back
            assert numbered(events[1:], events[0].seq)
        # The id belongs to that memory: reusing it elsewhere is a conflict, not a replay.
        other = await new_memory(a)
        with pytest.raises(RequestError) as info:
            await send(a, other["id"], "dup")
        assert info.value.code == "conflict"


async def test_concurrent_senders_get_a_gap_free_per_memory_seq(url: str, user: Api) -> None:
    async with (
        device(url, user.token) as a,
        device(url, user.token, codec="msgpack") as b,
        device(url, user.token) as c,
    ):
        memory = await new_memory(a)
        start = a.last_seq
        assert start is not None
        devices = {"a": a, "b": b, "c": c}

        async def sender(name: str) -> list[Any]:
            return [await send(devices[name], memory["id"], f"{name}{i}") for i in range(20)]

        results = await asyncio.gather(*(sender(n) for n in devices))
        seqs = sorted(m["seq"] for r in results for m in r)
        assert seqs == list(range(1, 61))
        for r in results:  # each sender's own messages in its order
            assert [m["seq"] for m in r] == sorted(m["seq"] for m in r)
        for d in devices.values():
            events = await take(d, 61)
            created = events[1:]
            assert numbered(created, events[0].seq)
            # The user's event order is the memory's commit order.
            assert [e.data["seq"] for e in created] == list(range(1, 61))
            assert sorted(e.data["clientMsgId"] for e in created) == sorted(
                f"{n}{i}" for n in devices for i in range(20)
            )
        page = await a.request("message.history", memory_id=memory["id"], limit=100)
        assert [m["seq"] for m in page["messages"]] == list(range(1, 61))


# -- a real restart -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """``memoryd serve`` as a real subprocess."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env = env
        self.port = port
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        exe = Path(sys.executable).with_name("memoryd")
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                str(exe), "serve", "--port", str(self.port), env=self.env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.returncode is None, self.log.read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.url + "/health") as resp:
                    if resp.status == 200:
                        return
            assert time.monotonic() < deadline, "memoryd serve did not come up"
            await asyncio.sleep(0.1)

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def test_sigterm_closes_with_1012_and_the_sdk_resumes_on_the_restarted_node(
    database_url: str,
    base_settings: Settings,
    scratch_dir: Path,
    http: aiohttp.ClientSession,
    api: Api,
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # The key material of the in-process test servers: they are this node's peers.
        "MEMORYD_DATA_DIR": str(base_settings.data_dir),
        "MEMORYD_LOG_LEVEL": "warning",
        "MEMORYD_RATE_LIMIT_AUTH": "off",
        "MEMORYD_RATE_LIMIT_API": "off",
        "MEMORYD_SHUTDOWN_TIMEOUT": "4",
    }
    env.pop("REDIS_URL", None)
    node = Node(env, _free_port(), scratch_dir / f"node-{uuid.uuid4().hex[:8]}.log")
    try:
        await node.start(http)
        user = await Api(http, node.url).register()
        peer = api.as_user(user.token)  # the shared in-process server: another node
        async with device(ws_url(node), user.token, max_backoff=0.3) as c:
            memory = (await user.post("/api/memories", json={"title": "restart"})).body["memory"]
            path = f"/api/memories/{memory['id']}/messages"
            assert (await c.next_event()).event == "memory.created"
            assert (await send(c, memory["id"], "before"))["seq"] == 1
            assert (await c.next_event()).data["content"] == "before"
            start = c.last_seq
            assert start is not None

            assert await node.terminate() == 0
            await eventually(lambda: c.close_code == 1012)
            # While this node is down, writes go to the other node.
            for i in range(10):
                resp = await peer.post(path, json={"content": f"while down {i}"})
                assert resp.status == 201, resp.body
            with pytest.raises((TimeoutError, Disconnected)):  # not connected: cannot go out
                await c.request("ping", timeout=0.2)

            await node.start(http)
            await eventually(lambda: c.connections == 2, timeout=10)
            assert c.welcome is not None and not c.welcome.resync
            resp = await user.post(path, json={"content": "after restart"})
            assert resp.status == 201
            got = await take(c, 11)
            assert numbered(got, start)
            assert contents(got) == [f"while down {i}" for i in range(10)] + ["after restart"]
            assert c.wire == list(range(start - 1, start + 12))
            assert c.pending_events() == 0
    finally:
        await node.kill()


# Last in this module: pruning removes every event logged so far, for every user.
async def test_resuming_from_before_the_pruned_log_asks_for_a_resync(
    url: str, user: Api, db: Database
) -> None:
    async with device(url, user.token) as a:
        memory = await new_memory(a)
        for i in range(3):
            await send(a, memory["id"], f"old-{i}")
        await take(a, 4)
        device_id, last = a.device_id, a.last_seq
        assert last is not None
    assert await EventStore(db).prune(datetime.now(UTC) + timedelta(seconds=1)) >= 4
    # Up to date with what was pruned: nothing to replay, no resync needed.
    async with device(url, user.token, device_id=device_id, last_seq=last) as current:
        assert current.welcome is not None
        assert (current.welcome.resync, current.welcome.head_seq) == (False, last)
    # Behind what was pruned: the device must refetch state, then follows live.
    async with device(url, user.token, device_id=device_id, last_seq=last - 2) as behind:
        assert behind.welcome is not None
        assert (behind.welcome.resync, behind.welcome.head_seq) == (True, last)
        assert behind.last_seq == last
        await send(behind, memory["id"], "new")
        event = await behind.next_event()
        assert (event.seq, event.data["content"]) == (last + 1, "new")
        assert behind.wire == [last + 1]
