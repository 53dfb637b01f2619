"""Multi-node fixtures: real ``memoryd serve`` processes sharing one PostgreSQL and one Redis.

* ``redis_url``: the machine's Redis (``TEST_REDIS_URL``, default 127.0.0.1:6379, DB 15 so
  the presence and rate-limit keys of the tests stay out of DB 0; pub/sub channels are
  global but per user id, and every test uses fresh users). Nothing is ever flushed.
* ``private_redis``: a factory of ``redis-server`` processes of the test's own, on a free
  port, without persistence, that a test may stop (SIGKILL) and restart on the same port.
* ``start_nodes``: a factory of `Node` processes (``memoryd serve`` on a free port), all
  killed when the test ends. Nodes share one data directory, hence one JWT key.

Redis is required: under CI (``CI=true``) a missing Redis or ``redis-server`` fails the
tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
import pytest_asyncio
import redis

from memoryd.client import Client, ClientEvent, ClientSignal
from memoryd.protocol import frames as f
from tests.helpers import Api

MEMORYD = Path(sys.executable).with_name("memoryd")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
START_TIMEOUT = 30.0


# -- Redis ----------------------------------------------------------------------------------


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a process's log, for a failure message ("" if none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def unavailable(reason: str) -> None:
    """A missing dependency: a failure under CI, a skip (with the reason) elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: multi-node tests must not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"no Redis at {url}: {exc}")
    finally:
        client.close()
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A ``redis-server`` of the test's own: ``stop()`` kills it, ``start()`` brings it back
    on the same port (empty: nothing is saved)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: every client connection drops at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(scratch_dir: Path) -> Iterator[Callable[[], PrivateRedis]]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (needed to stop and restart Redis)")
    assert binary is not None
    servers: list[PrivateRedis] = []

    def make() -> PrivateRedis:
        workdir = scratch_dir / f"redis-{uuid.uuid4().hex[:8]}"
        workdir.mkdir()
        server = PrivateRedis(binary, workdir)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


# -- memoryd nodes --------------------------------------------------------------------------


def node_env(database_url: str, redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a node: limits off unless ``extra`` sets them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MEMORYD_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MEMORYD_DATA_DIR=str(data_dir),
        MEMORYD_LOG_LEVEL="warning",
        MEMORYD_RATE_LIMIT_AUTH="off",
        MEMORYD_RATE_LIMIT_API="off",
        MEMORYD_RATE_LIMIT_UPLOAD="off",
        MEMORYD_RATE_LIMIT_AI="off",
        MEMORYD_DB_POOL_MIN="1",
        MEMORYD_DB_POOL_MAX="5",
        MEMORYD_SHUTDOWN_TIMEOUT="2",
    )
    env.update(extra)
    return env


class Node:
    """One ``memoryd serve`` process on 127.0.0.1:<port>."""

    def __init__(
        self, name: str, env: dict[str, str], http: aiohttp.ClientSession, log_dir: Path
    ) -> None:
        self.name = name
        self.env = env
        self.http = http
        self.port = free_port()
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def __repr__(self) -> str:
        return f"<Node {self.name} :{self.port}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def api(self) -> Api:
        return Api(self.http, self.url)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._log = self.log_path.open("ab")
        return subprocess.Popen(
            [str(MEMORYD), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process (on this node's port) and wait until /ready answers 200."""
        assert not self.alive
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.get(
                    self.url + "/ready", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                self.kill_now()
                raise RuntimeError(f"{self} not ready in {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def _wait(self, timeout: float) -> None:
        assert self.proc is not None
        await asyncio.to_thread(self.proc.wait, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no close frames, presence entries left behind."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            await self._wait(10)

    async def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM: graceful shutdown (sockets closed with 1012)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await self._wait(timeout)
            except subprocess.TimeoutExpired:
                await self.kill()
        elif self.proc is not None:
            await self._wait(1)

    async def restart(self) -> None:
        """Stop (gracefully) and start again on the same port."""
        await self.terminate()
        await self.start()

    def kill_now(self) -> None:
        """Synchronous last-resort cleanup."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by its name with labels (``name{a="b"}``)."""
        async with self.http.get(self.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    async def metric(self, name: str) -> float:
        return (await self.metrics())[name]


class Cluster:
    """Starts nodes; ``close()`` kills whatever is still running."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        data_dir: Path,
        http: aiohttp.ClientSession,
        log_dir: Path,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.http = http
        self.log_dir = log_dir
        self.nodes: list[Node] = []

    async def start(self, count: int, *, redis_url: str | None = None, **env: str) -> list[Node]:
        """Start ``count`` nodes in parallel with ``env`` (e.g. MEMORYD_PRESENCE_TTL="3")."""
        environment = node_env(self.database_url, redis_url or self.redis_url, self.data_dir, **env)
        first = len(self.nodes)
        nodes = [
            Node("node" + "ABCDEFGHIJ"[(first + i) % 10], environment, self.http, self.log_dir)
            for i in range(count)
        ]
        self.nodes.extend(nodes)
        await asyncio.gather(*(n.start() for n in nodes))
        return nodes

    async def close(self) -> None:
        for node in self.nodes:
            node.kill_now()


@pytest.fixture(scope="session")
def node_data_dir(scratch_dir: Path) -> Path:
    """One data directory for every node of the run: they share its JWT key."""
    path = scratch_dir / "multinode"
    path.mkdir(exist_ok=True)
    (path / "logs").mkdir(exist_ok=True)
    return path


@asynccontextmanager
async def cluster_of(
    database_url: str, redis_url: str, node_data_dir: Path
) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(database_url, redis_url, node_data_dir, http, node_data_dir / "logs")
        try:
            yield cluster
        finally:
            await cluster.close()


@pytest_asyncio.fixture
async def cluster(database_url: str, redis_url: str, node_data_dir: Path) -> AsyncIterator[Cluster]:
    """Nodes started by one test; killed when it ends."""
    async with cluster_of(database_url, redis_url, node_data_dir) as c:
        yield c


# -- devices --------------------------------------------------------------------------------


class Device(Client):
    """The SDK client, plus ``wire``: every event seq as it came off the socket, before the
    SDK's own de-duplication (a duplicate sent by a server would show here)."""

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


async def signal_where(
    client: Client, name: str, match: Callable[[Any], bool] = lambda _d: True, timeout: float = 5.0
) -> ClientSignal:
    """The next signal called ``name`` whose data satisfies ``match`` (others skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        signal_ = await client.next_signal(max(0.01, deadline - time.monotonic()))
        if signal_.signal == name and match(signal_.data):
            return signal_


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0, interval: float = 0.05
) -> float:
    """Wait until ``check()`` is true; return how long it took."""
    started = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(interval)


def assert_exactly_once_in_order(seqs: list[int], first: int, last: int) -> None:
    """``seqs`` is exactly first..last: nothing missing, nothing twice, in order."""
    expected = list(range(first, last + 1))
    if seqs != expected:
        missing = sorted(set(expected) - set(seqs))
        extra = [s for s in seqs if s not in expected]
        duplicated = sorted({s for s in seqs if seqs.count(s) > 1})
        raise AssertionError(
            f"seqs {first}..{last} not delivered exactly once in order: missing={missing} "
            f"duplicated={duplicated} unexpected={extra} got={seqs}"
        )
