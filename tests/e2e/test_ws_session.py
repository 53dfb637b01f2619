"""/ws device sessions against a real server: fan-out between devices, every request type,
bad frames, the handshake's refusals, and the bounds (sockets, rate, queue)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from memoryd.client import Client, ClientEvent, ClientSignal, HandshakeError, RequestError
from memoryd.protocol import frames as f
from memoryd.protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from memoryd.protocol.models import User
from memoryd.server.keys import SERVICES
from memoryd.storage.database import Database
from tests.conftest import RunningServer, StartServer
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


# -- helpers ------------------------------------------------------------------------------


def ws_url(server: RunningServer | Any) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"


class Device(Client):
    """The SDK client, plus ``wire``: every event seq as it came off the socket, before the
    SDK's own de-duplication (so a duplicate sent by the server would show)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire: list[int] = []

    def _on_frame(self, frame: f.ServerFrame) -> None:
        if isinstance(frame, f.EventFrame):
            self.wire.append(frame.seq)
        super()._on_frame(frame)


@asynccontextmanager
async def device(url: str, token: str, **options: Any) -> AsyncIterator[Device]:
    client = Device(url, token, **options)
    try:
        await client.start()
        yield client
    finally:
        await client.close()


async def take(client: Client, n: int, timeout: float = 10.0) -> list[ClientEvent]:
    return [await client.next_event(timeout) for _ in range(n)]


async def signal_named(client: Client, name: str, timeout: float = 5.0) -> ClientSignal:
    """The next signal called ``name`` (presence signals of other tests' devices skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        signal = await client.next_signal(max(0.01, deadline - time.monotonic()))
        if signal.signal == name:
            return signal


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Raw:
    """A bare websockets connection speaking the wire format by hand (no SDK)."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, codec: str = "json", **kw: Any) -> AsyncIterator[Raw]:
        subprotocol = SUBPROTOCOL_MSGPACK if codec == "msgpack" else SUBPROTOCOL_JSON
        async with ws_connect(
            url, subprotocols=[subprotocol], compression=None, proxy=None, **kw
        ) as ws:
            assert ws.subprotocol == subprotocol
            yield cls(ws, codec == "msgpack")

    async def send(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send(msgspec.msgpack.encode(frame))
        else:
            await self.ws.send(msgspec.json.encode(frame).decode())

    async def send_bytes(self, data: bytes) -> None:
        """As a frame of this socket's kind (binary for msgpack, text for JSON)."""
        await self.ws.send(data, text=not self.binary)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.binary:
            assert isinstance(data, bytes)
            return msgspec.msgpack.decode(data)  # type: ignore[no-any-return]
        assert isinstance(data, str)
        return msgspec.json.decode(data)  # type: ignore[no-any-return]

    async def recv_control(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next welcome/reply/error, skipping events and signals."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] not in ("event", "signal"):
                return frame

    async def hello(self, token: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "token": token, **fields})
        welcome = await self.recv_control()
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def ping(self, request_id: str = "p") -> None:
        await self.send({"type": "ping", "id": request_id})
        reply = await self.recv_control()
        assert (reply["type"], reply["id"], reply["data"]["pong"]) == ("reply", request_id, True)

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read (and drop) frames until the server closes; the close code it sent."""
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        return self.ws.close_code


def forge_token(server: RunningServer, user: Api, *, expires_in: float) -> str:
    """An access token of ``user`` signed by ``server``, expiring in ``expires_in`` seconds."""
    tokens = server.app[SERVICES].tokens
    account = msgspec.convert(user.user, User)  # type: ignore[attr-defined]
    issued_at = datetime.now(UTC) - timedelta(seconds=tokens.access_ttl - expires_in)
    return tokens.issue_access(account, now=issued_at)


async def metric(api: Api, name: str) -> float:
    resp = await api.get("/metrics")
    assert resp.status == 200
    for line in str(resp.body).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


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


@pytest_asyncio.fixture
async def premium(api: Api, db: Database) -> Api:
    """A user who may delete (plain users may not, as in the seed's roles)."""
    return await promote(await api.register(), db)


async def new_memory(client: Client, title: str = "thread") -> dict[str, Any]:
    memory = await client.request("memory.create", title=title)
    assert memory["title"] == title
    return memory  # type: ignore[no-any-return]


def summary(events: list[ClientEvent]) -> list[tuple[int, str, Any]]:
    """What two codecs agree on: seq, type and the resource id."""
    return [(e.seq, e.event, e.data.get("id")) for e in events]


# -- fan-out between devices ------------------------------------------------------------


async def test_two_devices_see_each_others_messages_once_in_order(url: str, user: Api) -> None:
    async with (
        device(url, user.token, codec="json") as a,
        device(url, user.token, codec="msgpack") as b,
    ):
        assert a.welcome is not None and b.welcome is not None
        assert a.device_id != b.device_id
        start = b.welcome.head_seq
        memory = await new_memory(a)

        async def send(client: Client, name: str) -> list[dict[str, Any]]:
            sent = []
            for i in range(15):
                sent.append(
                    await client.request(
                        "message.send",
                        memory_id=memory["id"],
                        client_msg_id=f"{name}-{i}",
                        content=f"{name} says {i}",
                    )
                )
            return sent

        sent_a, sent_b = await asyncio.gather(send(a, "a"), send(b, "b"))
        got_a, got_b = await take(a, 31), await take(b, 31)
        # Both see the same 31 events, numbered start+1.. with no gap, each once.
        assert [e.seq for e in got_a] == list(range(start + 1, start + 32))
        assert summary(got_a) == summary(got_b)
        assert a.wire == b.wire == [e.seq for e in got_a]
        assert got_a[0].event == "memory.created"
        created = [e for e in got_a if e.event == "message.created"]
        # The sender sees its own messages too; each device's sends keep their order.
        assert {e.data["id"] for e in created} == {m["id"] for m in sent_a + sent_b}
        for name, sent in (("a", sent_a), ("b", sent_b)):
            mine = [e.data["content"] for e in created if e.data["clientMsgId"].startswith(name)]
            assert mine == [m["content"] for m in sent]
        # Per-memory seq follows the user's event order.
        assert [e.data["seq"] for e in created] == list(range(1, 31))
        # Nothing more is on its way: the next event is a fresh one.
        await a.request("memory.update", memory_id=memory["id"], title="after")
        assert (await b.next_event()).seq == start + 32


async def test_rest_changes_reach_the_sockets(url: str, premium: Api) -> None:
    user = premium
    async with (
        device(url, user.token) as a,
        device(url, user.token, codec="msgpack") as b,
    ):
        resp = await user.post("/api/memories", json={"title": "from REST"})
        assert resp.status == 201
        memory_id = resp.body["memory"]["id"]
        resp = await user.post(f"/api/memories/{memory_id}/messages", json={"content": "hi"})
        assert resp.status == 201
        message_id = resp.body["message"]["id"]
        path = f"/api/memories/{memory_id}/messages/{message_id}"
        assert (await user.patch(path, json={"content": "hi!"})).status == 200
        assert (await user.delete(path)).status == 204
        resp = await user.post("/api/categories", json={"name": "Home"})
        assert resp.status == 201
        category_id = resp.body["category"]["id"]
        patch = {"title": "renamed", "categoryId": category_id}
        assert (await user.patch(f"/api/memories/{memory_id}", json=patch)).status == 200
        assert (await user.delete(f"/api/memories/{memory_id}")).status == 204

        expected = [
            ("memory.created", memory_id),
            ("message.created", message_id),
            ("message.updated", message_id),
            ("message.deleted", message_id),
            ("category.created", category_id),
            ("memory.updated", memory_id),
            ("memory.deleted", memory_id),
        ]
        for client in (a, b):
            events = await take(client, len(expected))
            assert [(e.event, e.data["id"]) for e in events] == expected
            first = events[0].seq
            assert [e.seq for e in events] == list(range(first, first + len(expected)))
            assert events[1].data["content"] == "hi"
            assert events[2].data["content"] == "hi!"
            assert events[3].data["memoryId"] == memory_id
            assert events[5].data["title"] == "renamed"


async def test_another_users_socket_never_sees_the_events(url: str, api: Api) -> None:
    alice, mallory = await api.register(), await api.register()
    async with device(url, alice.token) as a, device(url, mallory.token) as m:
        memory = await new_memory(a, "private")
        await a.request("message.send", memory_id=memory["id"], client_msg_id="x", content="s")
        await user_post_ok(alice, f"/api/memories/{memory['id']}/messages", {"content": "t"})
        await a.request("typing", memory_id=memory["id"])
        assert len(await take(a, 3)) == 3
        # Mallory's own next event comes first on her socket: had any of Alice's events or
        # signals been queued there, they would be ahead of it (one ordered queue).
        assert m.welcome is not None
        await new_memory(m, "mine")
        event = await m.next_event()
        assert (event.seq, event.event) == (m.welcome.head_seq + 1, "memory.created")
        assert event.data["title"] == "mine"
        assert m.pending_events() == 0
        assert m.wire == [event.seq]
        # And her requests cannot reach Alice's memory.
        with pytest.raises(RequestError) as info:
            await m.request("memory.get", memory_id=memory["id"])
        assert info.value.code == "not_found"
        with pytest.raises(RequestError) as info:
            await m.request(
                "message.send", memory_id=memory["id"], client_msg_id="y", content="sneaky"
            )
        assert info.value.code == "not_found"
        with pytest.raises(asyncio.TimeoutError):
            await m.next_signal(timeout=0.2)


async def user_post_ok(client: Api, path: str, body: dict[str, Any]) -> Any:
    resp = await client.post(path, json=body)
    assert resp.status == 201, resp.body
    return resp.body


# -- request / reply for every request type --------------------------------------------


async def test_memory_requests(url: str, premium: Api, user: Api) -> None:
    async with device(url, premium.token) as a, device(url, premium.token) as b:
        created = await a.request(
            "memory.create", title="Trip", tags=["sea"], is_favorite=True, content={"k": 1}
        )
        assert (created["title"], created["tags"], created["isFavorite"]) == (
            "Trip",
            ["sea"],
            True,
        )
        memory_id = created["id"]
        assert await a.request("memory.get", memory_id=memory_id) == created
        listed = await a.request("memory.list", is_favorite=True, limit=5)
        assert [m["id"] for m in listed["memories"]] == [memory_id]
        assert listed["pagination"]["total"] == 1
        updated = await a.request("memory.update", memory_id=memory_id, title="Trip 2")
        assert (updated["id"], updated["title"], updated["tags"]) == (memory_id, "Trip 2", ["sea"])
        assert await a.request("memory.delete", memory_id=memory_id) == {"deleted": True}
        with pytest.raises(RequestError) as info:
            await a.request("memory.get", memory_id=memory_id)
        assert info.value.code == "not_found"
        with pytest.raises(RequestError) as info:
            await a.request("memory.update", memory_id=memory_id)
        assert info.value.code in ("not_found", "validation_failed")
        events = await take(b, 3)
        assert [(e.event, e.data["id"]) for e in events] == [
            ("memory.created", memory_id),
            ("memory.updated", memory_id),
            ("memory.deleted", memory_id),
        ]
        assert events[1].data["title"] == "Trip 2"
    async with device(url, user.token) as plain:
        memory = await new_memory(plain)
        with pytest.raises(RequestError) as info:
            await plain.request("memory.delete", memory_id=memory["id"])
        assert info.value.code == "forbidden"
        assert info.value.details == {"permission": "delete:memories"}


async def test_category_requests(url: str, user: Api) -> None:
    async with device(url, user.token) as a, device(url, user.token, codec="msgpack") as b:
        before = await a.request("category.list")
        name = f"Work {uuid.uuid4().hex[:6]}"
        category = await a.request("category.create", name=name, color="#112233")
        assert (category["name"], category["color"]) == (name, "#112233")
        listed = await a.request("category.list")
        assert len(listed["categories"]) == len(before["categories"]) + 1
        assert category["id"] in {c["id"] for c in listed["categories"]}
        updated = await b.request("category.update", category_id=category["id"], name=name + "!")
        assert (updated["id"], updated["name"], updated["color"]) == (
            category["id"],
            name + "!",
            "#112233",
        )
        assert await a.request("category.delete", category_id=category["id"]) == {"deleted": True}
        with pytest.raises(RequestError) as info:
            await a.request("category.delete", category_id=category["id"])
        assert info.value.code == "not_found"
        with pytest.raises(RequestError) as info:
            await a.request("category.create", name="x", color="blue")
        assert info.value.code == "validation_failed"
        assert [d["field"] for d in info.value.details] == ["color"]
        for client in (a, b):
            events = await take(client, 3)
            assert [(e.event, e.data["id"]) for e in events] == [
                ("category.created", category["id"]),
                ("category.updated", category["id"]),
                ("category.deleted", category["id"]),
            ]


async def test_message_requests(url: str, premium: Api) -> None:
    user = premium
    async with device(url, user.token, codec="msgpack") as a:
        memory = await new_memory(a)
        sent = []
        for i in range(5):
            sent.append(
                await a.request(
                    "message.send",
                    memory_id=memory["id"],
                    client_msg_id=f"m{i}",
                    content=f"note {i}",
                    metadata={"i": i},
                )
            )
        assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]
        assert sent[0]["clientMsgId"] == "m0" and sent[0]["metadata"] == {"i": 0}
        assert sent[0]["memoryId"] == memory["id"]
        reply = await a.request(
            "message.send",
            memory_id=memory["id"],
            client_msg_id="child",
            content="re",
            parent_id=sent[0]["id"],
        )
        assert reply["parentId"] == sent[0]["id"]
        edited = await a.request("message.edit", message_id=sent[1]["id"], content="changed")
        assert (edited["id"], edited["content"], edited["seq"]) == (sent[1]["id"], "changed", 2)
        assert await a.request("message.delete", message_id=sent[2]["id"]) == {"deleted": True}
        page = await a.request("message.history", memory_id=memory["id"], limit=3)
        assert [m["seq"] for m in page["messages"]] == [4, 5, 6]  # newest three, oldest first
        assert page["hasMore"] is True
        older = await a.request("message.history", memory_id=memory["id"], before=4, limit=10)
        assert [m["seq"] for m in older["messages"]] == [1, 2]  # 3 was deleted
        assert older["hasMore"] is False
        assert older["messages"][1]["content"] == "changed"

        limit = a.welcome.limits.max_content_chars if a.welcome else 0
        with pytest.raises(RequestError) as info:
            await a.request(
                "message.send",
                memory_id=memory["id"],
                client_msg_id="big",
                content="x" * (limit + 1),
            )
        assert info.value.code == "validation_failed"
        assert [d["field"] for d in info.value.details] == ["content"]
        with pytest.raises(RequestError) as info:
            await a.request(
                "message.send", memory_id=str(uuid.uuid4()), client_msg_id="lost", content="x"
            )
        assert info.value.code == "not_found"
        with pytest.raises(RequestError) as info:
            await a.request("message.edit", message_id=sent[2]["id"], content="ghost")
        assert info.value.code == "not_found"
        events = await take(a, 9)
        assert [e.event for e in events] == ["memory.created"] + ["message.created"] * 6 + [
            "message.updated",
            "message.deleted",
        ]


async def test_typing_is_relayed_to_the_other_devices_only(url: str, user: Api) -> None:
    async with device(url, user.token) as a, device(url, user.token, codec="msgpack") as b:
        memory = await new_memory(a)
        assert await a.request("typing", memory_id=memory["id"]) is None
        signal = await signal_named(b, "typing")
        assert signal.data == {
            "memoryId": memory["id"],
            "deviceId": a.device_id,
            "userId": user.user["id"],  # type: ignore[attr-defined]
        }
        await b.request("typing", memory_id=memory["id"])
        # a's first typing signal is b's: its own was not echoed back.
        assert (await signal_named(a, "typing")).data["deviceId"] == b.device_id
        # Typing is ephemeral: no event, nothing stored.
        await new_memory(a, "next")
        assert (await take(b, 2))[1].data["title"] == "next"


async def test_read_marker_is_durable_and_reaches_every_device(url: str, user: Api) -> None:
    async with device(url, user.token) as a, device(url, user.token, codec="msgpack") as b:
        memory = await new_memory(a)
        for i in range(3):
            await a.request(
                "message.send", memory_id=memory["id"], client_msg_id=f"r{i}", content="x"
            )
        await take(b, 4)
        marker = await a.request("read", memory_id=memory["id"], seq=2)
        assert marker == {"memoryId": memory["id"], "seq": 2}
        event = await b.next_event()
        assert (event.event, event.data) == ("memory.read", {"memoryId": memory["id"], "seq": 2})
        resp = await user.get(f"/api/memories/{memory['id']}")
        assert resp.body["memory"]["lastReadSeq"] == 2
        # Never past the last message, never backwards (and then no event).
        assert (await b.request("read", memory_id=memory["id"], seq=99))["seq"] == 3
        assert (await a.request("read", memory_id=memory["id"], seq=1))["seq"] == 3
        assert (await a.next_event()).event == "memory.created"
        rest = await take(a, 5)
        assert [e.event for e in rest] == ["message.created"] * 3 + ["memory.read"] * 2
        assert rest[-1].data["seq"] == 3
        resp = await user.get(f"/api/memories/{memory['id']}")
        assert resp.body["memory"]["lastReadSeq"] == 3
        with pytest.raises(RequestError) as info:
            await a.request("read", memory_id=str(uuid.uuid4()), seq=1)
        assert info.value.code == "not_found"


async def test_ping_and_auth_refresh(url: str, server: RunningServer, api: Api) -> None:
    owner, other = await api.register(), await api.register()
    async with device(url, owner.token, codec="msgpack") as a:
        pong = await a.request("ping")
        assert pong["pong"] is True
        fresh = forge_token(server, owner, expires_in=600)
        refreshed = await a.request("auth.refresh", access_token=fresh)
        assert "expiresAt" in refreshed
        with pytest.raises(RequestError) as info:
            await a.request("auth.refresh", access_token=other.token)
        assert info.value.code == "unauthorized"
        with pytest.raises(RequestError) as info:
            await a.request("auth.refresh", access_token="not-a-token")
        assert info.value.code == "invalid_token"
        for expired_for in (120, 3):  # also inside the clock-skew leeway
            expired = forge_token(server, owner, expires_in=-expired_for)
            with pytest.raises(RequestError) as info:
                await a.request("auth.refresh", access_token=expired)
            assert info.value.code == "token_expired"
        # A refresh token is not an access token.
        with pytest.raises(RequestError) as info:
            await a.request("auth.refresh", access_token=owner.refresh_token)  # type: ignore[attr-defined]
        assert info.value.code == "invalid_token"
        assert (await a.request("ping"))["pong"] is True
        assert (a.connections, a.close_code) == (1, None)  # no error closed the socket


async def test_token_expiry_closes_the_socket_unless_refreshed(
    url: str, server: RunningServer, user: Api
) -> None:
    short = forge_token(server, user, expires_in=2)
    async with Raw.open(url) as lapsing, device(url, short) as refreshed:
        await lapsing.hello(short)
        await refreshed.request(
            "auth.refresh", access_token=forge_token(server, user, expires_in=600)
        )
        started = time.monotonic()
        assert await lapsing.close_code() == 4001
        assert time.monotonic() - started < 4
        await asyncio.sleep(0.5)
        assert (await refreshed.request("ping"))["pong"] is True
        assert refreshed.connections == 1


# -- bad frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    url: str, user: Api, codec: str
) -> None:
    max_bytes = 64 * 1024
    async with Raw.open(url, codec) as raw:
        welcome = await raw.hello(user.token)
        assert welcome["limits"]["maxFrameBytes"] == max_bytes
        garbage = b"\xc1\x00\xff" if codec == "msgpack" else b'{"type": "ping", "id": '
        memory = str(uuid.uuid4())
        cases: list[tuple[Any, str, Any]] = [
            (garbage, "invalid_frame", None),
            ([1, 2, 3], "invalid_frame", None),
            ({"id": "t1"}, "invalid_frame", "t1"),
            ({"type": "bogus", "id": "u1"}, "unknown_type", "u1"),
            ({"type": "message.send", "id": "m1", "memoryId": memory}, "validation_failed", "m1"),
            ({"type": "read", "id": 5, "memoryId": "nope", "seq": 1}, "validation_failed", 5),
            ({"type": "hello", "token": user.token}, "already_authenticated", None),
            (
                {"type": "ping", "id": "big", "pad": "x" * (max_bytes + 100)},
                "frame_too_large",
                "big",
            ),
        ]
        for n, (frame, code, request_id) in enumerate(cases):
            if isinstance(frame, bytes):
                await raw.send_bytes(frame)
            elif isinstance(frame, list):
                await raw.send_bytes(
                    msgspec.msgpack.encode(frame)
                    if codec == "msgpack"
                    else msgspec.json.encode(frame)
                )
            else:
                await raw.send(frame)
            error = await raw.recv_control()
            assert (error["type"], error["code"], error.get("id")) == ("error", code, request_id)
            assert error["message"]
            if code == "validation_failed":
                fields = {d["field"] for d in error["details"]}
                assert fields == ({"memoryId"} if request_id == 5 else {"clientMsgId", "content"})
            await raw.ping(f"after-{n}")


async def test_a_frame_far_over_the_limit_closes_with_1009(url: str, user: Api) -> None:
    async with Raw.open(url, max_size=None) as raw:
        await raw.hello(user.token)
        await raw.send({"type": "ping", "id": 1, "pad": "x" * (4 * 64 * 1024 + 10)})
        assert await raw.close_code() == 1009


# -- the handshake ------------------------------------------------------------------------


async def test_no_hello_in_time_closes_with_4001(start_server: StartServer) -> None:
    server = await start_server(ws_hello_timeout=1)
    async with Raw.open(ws_url(server)) as raw:
        started = time.monotonic()
        error = await raw.recv(timeout=5)
        assert (error["type"], error["code"]) == ("error", "hello_required")
        assert 0.8 < time.monotonic() - started < 3
        assert await raw.close_code() == 4001


async def test_a_first_frame_other_than_hello_closes_with_4001(url: str) -> None:
    async with Raw.open(url, "msgpack") as raw:
        await raw.send({"type": "ping", "id": 1})
        error = await raw.recv()
        assert (error["type"], error["code"]) == ("error", "hello_required")
        assert await raw.close_code() == 4001
    async with Raw.open(url) as raw:
        await raw.send_bytes(b"{not json")
        assert (await raw.recv())["code"] == "invalid_frame"
        assert await raw.close_code() == 4001


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
async def test_a_bad_token_is_refused_with_4001(url: str, token: str) -> None:
    with pytest.raises(HandshakeError) as info:
        async with device(url, token):
            pass
    assert info.value.close_code == 4001
    assert info.value.code in ("invalid_token", "validation_failed")


@pytest.mark.parametrize("expired_for", [120, 3], ids=["long-ago", "within-clock-skew"])
async def test_an_expired_token_is_refused_with_4001(
    url: str, server: RunningServer, user: Api, expired_for: int
) -> None:
    # Even within the clock-skew leeway: accepted, it would be closed by the expiry timer at
    # once, and the client would come back with the same token again and again.
    expired = forge_token(server, user, expires_in=-expired_for)
    with pytest.raises(HandshakeError) as info:
        async with device(url, expired):
            pass
    assert (info.value.code, info.value.close_code) == ("token_expired", 4001)
    # A refresh token cannot open a session either.
    with pytest.raises(HandshakeError) as info:
        async with device(url, user.refresh_token):  # type: ignore[attr-defined]
            pass
    assert (info.value.code, info.value.close_code) == ("invalid_token", 4001)


async def test_a_second_connection_of_a_device_supersedes_the_first(url: str, user: Api) -> None:
    async with device(url, user.token) as first:
        memory = await new_memory(first)
        await first.next_event()
        async with device(
            url, user.token, device_id=first.device_id, last_seq=first.last_seq
        ) as second:
            assert second.welcome is not None
            assert second.welcome.device_id == uuid.UUID(first.device_id)
            await eventually(lambda: first.close_code == 4011)
            # The superseded session does not fight back by reconnecting.
            await asyncio.sleep(0.5)
            assert first.connections == 1
            assert second.close_code is None and second.connections == 1
            await second.request(
                "message.send", memory_id=memory["id"], client_msg_id="s", content="x"
            )
            assert (await second.next_event()).event == "message.created"
            assert first.pending_events() == 0


async def test_a_device_id_of_another_user_is_not_shared(url: str, api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    async with device(url, alice.token) as a, device(url, bob.token, device_id=a.device_id) as b:
        assert b.device_id != a.device_id
        await asyncio.sleep(0.2)
        assert a.close_code is None and (await a.request("ping"))["pong"]


# -- bounds -------------------------------------------------------------------------------


async def test_sockets_per_user_are_capped(start_server: StartServer, http: Any) -> None:
    server = await start_server(ws_max_sockets_per_user=2)
    url = ws_url(server)
    user = await Api(http, server.url).register()
    other = await Api(http, server.url).register()
    async with device(url, user.token) as a, device(url, user.token) as b:
        with pytest.raises(HandshakeError) as info:
            async with device(url, user.token):
                pass
        assert (info.value.code, info.value.close_code) == ("rate_limited", 4008)
        # The cap is per user.
        async with device(url, other.token) as c:
            assert (await c.request("ping"))["pong"]
        # A device coming back while its old socket still counts takes that one's place.
        async with device(url, user.token, device_id=a.device_id) as again:
            await eventually(lambda: a.close_code == 4011)
            assert (await again.request("ping"))["pong"]

        # Only b is left: the superseded socket counts no more (nor does the closed one).
        async def only_b() -> bool:
            presence = await b.request("presence")
            return [d["deviceId"] for d in presence["devices"]] == [b.device_id]

        await eventually(only_b)


async def test_request_rate_is_limited_then_abuse_closes_with_4008(
    start_server: StartServer, http: Any
) -> None:
    server = await start_server(ws_requests_per_second=1, ws_request_burst=2)
    user = await Api(http, server.url).register()
    async with device(ws_url(server), user.token, reconnect=False) as c:
        assert c.welcome is not None
        assert (c.welcome.limits.requests_per_second, c.welcome.limits.request_burst) == (1, 2)
        results = await asyncio.gather(
            *(c.request("ping") for _ in range(3)), return_exceptions=True
        )
        assert [r["pong"] for r in results if isinstance(r, dict)] == [True, True]
        [limited] = [r for r in results if isinstance(r, RequestError)]
        assert limited.code == "rate_limited"
        assert limited.retry_after is not None and 0 < limited.retry_after <= 1
        await asyncio.sleep(limited.retry_after)
        assert (await c.request("ping"))["pong"]  # waiting as told works
        await asyncio.gather(*(c.request("ping") for _ in range(6)), return_exceptions=True)
        await eventually(lambda: c.close_code == 4008)


async def test_a_client_that_waits_out_retry_after_is_never_closed(
    start_server: StartServer, http: Any, db: Database
) -> None:
    """At the default limits, one send at a time, sleeping exactly the ``retryAfter`` of
    each ``rate_limited``: the server's own hint is never abuse (issue 12.1)."""
    server = await start_server()
    user = await Api(http, server.url).register()
    async with device(ws_url(server), user.token, reconnect=False) as c:
        assert c.welcome is not None
        assert (c.welcome.limits.requests_per_second, c.welcome.limits.request_burst) == (20, 60)
        memory = await new_memory(c)
        limited = 0
        for n in range(400):
            while True:
                try:
                    await c.request(
                        "message.send",
                        memory_id=memory["id"],
                        client_msg_id=f"w{n}",
                        content=f"{n}",
                    )
                    break
                except RequestError as exc:
                    assert exc.code == "rate_limited" and exc.retry_after is not None
                    limited += 1
                    await asyncio.sleep(exc.retry_after)
        assert limited > 60  # the limit was really reached, many times over
        await asyncio.sleep(0.2)  # a 4008 would have been sent by now
        assert c.close_code is None
        assert (await c.request("ping"))["pong"]
    rows = await db.fetch(
        "SELECT content FROM messages WHERE memory_id = $1", uuid.UUID(memory["id"])
    )
    assert sorted(int(r["content"]) for r in rows) == list(range(400))


async def test_the_sdk_can_wait_out_rate_limited_itself(
    start_server: StartServer, http: Any, db: Database
) -> None:
    server = await start_server(ws_requests_per_second=20, ws_request_burst=5)
    user = await Api(http, server.url).register()
    async with (
        device(ws_url(server), user.token, reconnect=False, wait_rate_limited=True) as c,
        device(ws_url(server), user.token, reconnect=False) as plain,
    ):
        memory = await new_memory(c)
        for n in range(60):  # three times the rate, twelve times the burst: never an error
            await c.request(
                "message.send", memory_id=memory["id"], client_msg_id=f"s{n}", content=f"{n}"
            )
        assert c.close_code is None
        # Without the opt-in the same refusal reaches the caller.
        with pytest.raises(RequestError) as info:
            for _ in range(10):
                await plain.request("ping")
        assert info.value.code == "rate_limited" and info.value.retry_after
    rows = await db.fetch(
        "SELECT content FROM messages WHERE memory_id = $1", uuid.UUID(memory["id"])
    )
    assert sorted(int(r["content"]) for r in rows) == list(range(60))


async def test_a_slow_consumer_is_closed_with_4009(start_server: StartServer, http: Any) -> None:
    server = await start_server(
        ws_max_queue=16,
        ws_stall_timeout=1.0,
        max_content_chars=60_000,
        ws_requests_per_second=10_000,
        ws_request_burst=10_000,
    )
    url = ws_url(server)
    api = Api(http, server.url)
    user = await api.register()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    async with Raw.open(url, sock=sock, max_queue=1) as slow, device(url, user.token) as fast:
        await slow.send({"type": "hello", "token": user.token})  # and then never read
        memory = await new_memory(fast)
        await fast.next_event()
        big = "x" * 50_000
        sent = 0
        # Fill the slow socket's TCP buffers and queue; then it takes nothing for
        # ws_stall_timeout and is closed.
        while sent < 200 and await metric(api, "websocket_slow_consumer_closes_total") < 1:
            await asyncio.gather(
                *(
                    fast.request(
                        "message.send",
                        memory_id=memory["id"],
                        client_msg_id=f"b{sent + i}",
                        content=big,
                    )
                    for i in range(10)
                )
            )
            sent += 10

        async def closed() -> bool:
            return await metric(api, "websocket_slow_consumer_closes_total") >= 1

        await eventually(closed, timeout=10)
        assert await slow.close_code() == 4009
        # The fast device was not held back, and got every event.
        events = await take(fast, sent)
        assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + sent))
        assert fast.close_code is None and fast.connections == 1


async def test_presence_signals_when_another_device_comes_and_goes(url: str, user: Api) -> None:
    async with device(url, user.token) as a:
        async with device(url, user.token, codec="msgpack") as b:
            online = await signal_named(a, "presence")
            assert online.data == {"deviceId": b.device_id, "online": True}
            listed = await b.request("presence")
            assert sorted(listed["devices"], key=lambda d: d["deviceId"]) == sorted(
                [
                    {"deviceId": a.device_id, "online": True, "thisDevice": False},
                    {"deviceId": b.device_id, "online": True, "thisDevice": True},
                ],
                key=lambda d: d["deviceId"],
            )
        offline = await signal_named(a, "presence")
        assert offline.data == {"deviceId": b.device_id, "online": False}


async def test_a_burst_larger_than_the_queue_reaches_a_reading_device(
    start_server: StartServer, http: Any
) -> None:
    """More events than the socket's queue and the TCP buffers hold arrive while a device
    is busy: the overflow waits in the log, the socket stays open, and once the device
    reads it gets every event in order."""
    server = await start_server(ws_max_queue=16, max_content_chars=60_000)
    url = ws_url(server)
    api = Api(http, server.url)
    user = await api.register()
    memory = await user.post("/api/memories", json={"title": "Burst"})
    memory_id = memory.body["memory"]["id"]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    count = 120  # 6 MB: past the kernel's autotuned send buffer (4 MiB at most)
    async with Raw.open(url, sock=sock, max_queue=1) as dev:
        head = (await dev.hello(user.token))["headSeq"]
        for first in range(0, count, 10):  # the device reads nothing meanwhile
            sends = [
                user.post(
                    f"/api/memories/{memory_id}/messages",
                    json={"content": f"{i:03d}" + "x" * 50_000},
                )
                for i in range(first, first + 10)
            ]
            assert all(r.status == 201 for r in await asyncio.gather(*sends))
        events = []
        while len(events) < count:
            frame = await dev.recv(timeout=10)
            if frame["type"] == "event":
                events.append(frame)
        assert [e["seq"] for e in events] == list(range(head + 1, head + count + 1))
        assert sorted(e["data"]["content"][:3] for e in events) == [
            f"{i:03d}" for i in range(count)
        ]
        await dev.ping()  # still open and answering
    assert await metric(api, "websocket_slow_consumer_closes_total") == 0
    assert await metric(api, "websocket_replayed_events_total") > 0  # the log carried some


async def test_a_socket_send_times_its_stages_in_the_metrics(url: str, api: Api) -> None:
    user = await api.register()
    stage = 'memoryd_send_stage_seconds_count{stage="%s"}'
    # A plain send is one statement in a group commit: its wait for a batch, the pool, the
    # batch's statement; the transaction path (not taken here) times statements and commit.
    stages = ("decode", "batch_wait", "pool_acquire", "statement", "publish", "reply")
    before = {}
    for name in stages:
        try:
            before[name] = await metric(api, stage % name)
        except AssertionError:
            before[name] = 0.0  # not observed yet on this server
    async with device(url, user.token) as dev:
        memory = await new_memory(dev)
        await dev.request(
            "message.send", memory_id=memory["id"], client_msg_id="timed", content="timed"
        )
    for name in stages:
        assert await metric(api, stage % name) >= before[name] + 1, name
