"""The compose stack's nginx config (deploy/nginx/memoryd.conf), run by a real nginx in front
of two real ``memoryd serve`` nodes on loopback ports.

A device connected through nginx loses its node (SIGTERM: drained, closed with 1012; or
SIGKILL: the connection just breaks). Held offline, it misses events sent over REST through
the same nginx, which must skip the dead node by itself. Let go, the SDK reconnects to the
same URL, nginx hands it to the other node, and it resumes: every event exactly once, in
order, nothing lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from memoryd.client import ClientEvent
from tests.deploy.conftest import NGINX_SITE, Nginx, StartNginx, loopback_site
from tests.helpers import PASSWORD, Api
from tests.multinode.conftest import (
    Cluster,
    Device,
    Node,
    PrivateRedis,
    assert_exactly_once_in_order,
    eventually,
    free_port,
)

# -- nginx -t -------------------------------------------------------------------------------


def test_the_shipped_config_passes_nginx_t(nginx_binary: str, nginx_dir: Path) -> None:
    proxy = Nginx(nginx_binary, nginx_dir, [free_port(), free_port()])
    result = proxy.check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_does_read_the_site_file(nginx_binary: str, nginx_dir: Path) -> None:
    """The check above is not vacuous: a typo in the shipped site makes nginx -t fail."""
    proxy = Nginx(nginx_binary, nginx_dir, [free_port(), free_port()])
    site = proxy.prefix / "memoryd.conf"
    site.write_text(site.read_text().replace("proxy_http_version 1.1;", "proxy_http_versio 1.1;"))
    result = proxy.check()
    assert result.returncode != 0
    assert "proxy_http_versio" in result.stderr


def test_the_loopback_copy_changes_only_the_addresses() -> None:
    shipped = NGINX_SITE.read_text()
    copy = loopback_site(18080, [18081, 18082])
    changed = [
        (a, b) for a, b in zip(shipped.splitlines(), copy.splitlines(), strict=True) if a != b
    ]
    assert [b.strip() for _, b in changed] == [
        "server 127.0.0.1:18081 max_fails=1 fail_timeout=10s;",
        "server 127.0.0.1:18082 max_fails=1 fail_timeout=10s;",
        "listen 127.0.0.1:18080;",
    ]


# -- failover through nginx -----------------------------------------------------------------


class HeldDevice(Device):
    """A `Device` that can be held offline: after ``hold()``, once its socket drops
    (``dropped`` is set) the SDK's reconnect waits until ``release()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Event()
        self._gate.set()
        self.dropped = asyncio.Event()

    def hold(self) -> None:
        self._gate.clear()
        self.dropped.clear()

    def release(self) -> None:
        self._gate.set()

    async def _session(self) -> None:
        await self._gate.wait()
        try:
            await super()._session()
        finally:
            self.dropped.set()


@asynccontextmanager
async def held_device(url: str, token: str, **options: Any) -> AsyncIterator[HeldDevice]:
    client = HeldDevice(url, token, **options)
    try:
        await client.start()
        yield client
    finally:
        await client.close()


async def sockets_on(nodes: list[Node]) -> list[float]:
    return [await n.metric("websocket_connections_active") for n in nodes]


async def serving(nodes: list[Node]) -> Node:
    """The node holding the one open socket."""

    async def one_socket() -> bool:
        return sum(await sockets_on(nodes)) == 1.0

    await eventually(one_socket, timeout=5)
    counts = await sockets_on(nodes)
    return nodes[counts.index(1.0)]


async def drain(client: Device) -> list[ClientEvent]:
    events = []
    while client.pending_events():
        events.append(await client.next_event())
    return events


@pytest.mark.redis
@pytest.mark.parametrize(
    ("stop", "codec"), [("terminate", "json"), ("kill", "msgpack")], ids=["sigterm", "sigkill"]
)
async def test_a_device_reconnecting_through_nginx_lands_on_the_other_node_with_nothing_lost(
    cluster: Cluster, start_nginx: StartNginx, stop: str, codec: str
) -> None:
    nodes = await cluster.start(2, MEMORYD_TRUST_PROXY="true")
    proxy = await start_nginx(nodes)
    api = Api(cluster.http, proxy.url)
    health = await api.get("/health")
    assert health.status == 200, health.body
    assert health.body["checks"]["redis"] == "healthy"

    user = await api.register()
    assert user.token is not None
    async with held_device(proxy.ws_url, user.token, codec=codec) as phone:
        assert phone.welcome is not None
        head = phone.welcome.head_seq
        first = await serving(nodes)
        (second,) = [n for n in nodes if n is not first]

        created = await user.post("/api/memories", json={"title": "through nginx"})
        assert created.status == 201, created.body
        memory_id = created.body["memory"]["id"]
        sent: list[str] = []

        async def send(count: int, tag: str) -> None:
            for i in range(count):
                resp = await user.post(
                    f"/api/memories/{memory_id}/messages",
                    json={"content": f"{tag} {i}", "clientMsgId": f"{tag}-{i}"},
                )
                assert resp.status == 201, (resp.status, resp.body, proxy.log_tail())
                sent.append(str(resp.body["message"]["id"]))

        await send(3, "before")
        await eventually(lambda: phone.pending_events() == 4)  # memory.created + 3

        # The serving node goes away; the device is held offline meanwhile.
        phone.hold()
        await getattr(first, stop)()
        assert not first.alive
        await asyncio.wait_for(phone.dropped.wait(), 10)

        # REST through nginx while the device is away: every request lands on the
        # surviving node (the dead one refuses the connection; nginx tries the next).
        await send(5, "away")

        phone.release()
        await eventually(lambda: phone.connections == 2, timeout=10)
        assert await second.metric("websocket_connections_active") == 1.0

        await send(2, "after")  # live, on the new socket
        last = head + 1 + len(sent)
        await eventually(lambda: phone.last_seq == last, timeout=10)
        await asyncio.sleep(0.3)  # anything extra would arrive now
        events = await drain(phone)

    assert_exactly_once_in_order([e.seq for e in events], head + 1, last)
    assert_exactly_once_in_order(phone.wire, head + 1, last)  # the server sent none twice
    assert events[0].event == "memory.created"
    assert [str(e.data["id"]) for e in events[1:]] == sent
    assert {e.event for e in events[1:]} == {"message.created"}


# -- client addresses -----------------------------------------------------------------------


@pytest.mark.redis
async def test_a_forwarded_for_sent_by_the_client_never_reaches_the_nodes(
    cluster: Cluster, start_nginx: StartNginx, private_redis: Any
) -> None:
    """memoryd (MEMORYD_TRUST_PROXY=true) takes the last X-Forwarded-For address as the
    client's: nginx must replace what a client sends, or per-IP login limits could be
    dodged with a made-up header. The shared limiter's Redis keys show the IPs counted."""
    server: PrivateRedis = private_redis()
    nodes = await cluster.start(
        2,
        redis_url=server.url,
        MEMORYD_TRUST_PROXY="true",
        MEMORYD_RATE_LIMIT_AUTH="1000/86400",
    )
    proxy = await start_nginx(nodes)
    api = Api(cluster.http, proxy.url)
    user = await api.register()
    email = user.email  # type: ignore[attr-defined]
    for i in range(6):
        resp = await api.post(
            "/api/auth/login",
            json={"email": email, "password": PASSWORD},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        )
        assert resp.status == 200, resp.body

    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        counted: dict[str, int] = {}
        for key in client.scan_iter("memoryd:rl:auth:*"):
            address = key.decode().removeprefix("memoryd:rl:auth:").rpartition(":")[0]
            counted[address] = counted.get(address, 0) + int(client.get(key) or 0)
    finally:
        client.close()
    assert counted == {"127.0.0.1": 7}  # the registration and the six logins
