"""Multi-node fan-out benchmark: 1 node, then 2 nodes, on this machine.

For each node count it starts that many ``memoryd serve`` processes (one PostgreSQL, one
Redis), connects ``--users`` users with ``--devices`` devices each, spread round-robin over
the nodes (so with two nodes every user has devices on both), and has the first device of
each user send messages over its socket at a fixed total ``--rate`` for ``--duration``
seconds. Every device of the user receives every message as an event. It reports:

* deliveries per second (events received by devices, over the sending window plus the
  time the last one took to arrive), and any missing or duplicated delivery;
* p50 / p95 / p99 / max latency from send to delivery (the send time travels inside the
  message's ``metadata``; sender and receivers are this one process, one clock);
* Redis messages published and received by the nodes per delivered event (from the nodes'
  ``/metrics``, counted over the sending window only).

The database is ``--database-url`` / ``DATABASE_URL``, or else an embedded PostgreSQL in a
temporary directory. Redis is ``--redis-url`` / ``REDIS_URL``
(default ``redis://127.0.0.1:6379/0``); nothing in it is flushed.

    .venv/bin/python loadtests/bench_multinode.py --users 20 --rate 100 --duration 10

Prints a Markdown table and writes the figures as JSON (``--json``). Bounded: at most 500
users, 10 devices each, 2000 messages/s and 300 s per phase, and a hard time limit for the
whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as redis_asyncio
import uvloop

import memoryd
from memoryd.client import Client
from memoryd.protocol import frames as f

MEMORYD = Path(sys.executable).with_name("memoryd")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LIMITS = {"users": 500, "devices": 10, "rate": 2000.0, "duration": 300.0, "nodes": 4}


# -- nodes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MEMORYD), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node on :{self.port} exited:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(
                    self.url + "/ready", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node on :{self.port} not ready in {timeout} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 5)

    async def counters(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


@asynccontextmanager
async def running_nodes(
    count: int, base_env: dict[str, str], workdir: Path, http: aiohttp.ClientSession
) -> AsyncIterator[list[Node]]:
    nodes = [Node(base_env, workdir / f"node-{count}-{i}.log") for i in range(count)]
    try:
        for node in nodes:
            node.spawn()
        await asyncio.gather(*(n.wait_ready(http) for n in nodes))
        yield nodes
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


# -- devices --------------------------------------------------------------------------------


class Device(Client):
    """Counts every event seq off the wire, so a duplicate sent by a server shows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[int] = set()
        self.duplicates = 0

    def _on_frame(self, frame: f.ServerFrame) -> None:
        if isinstance(frame, f.EventFrame):
            if frame.seq in self.seen:
                self.duplicates += 1
            self.seen.add(frame.seq)
        super()._on_frame(frame)


@dataclass
class User:
    token: str
    memory_id: str


@dataclass
class Phase:
    nodes: int
    users: int
    devices_per_user: int
    rate: float
    duration: float
    sent: int = 0
    send_errors: int = 0
    expected_deliveries: int = 0
    deliveries: int = 0
    missing: int = 0
    duplicates: int = 0
    window_s: float = 0.0
    deliveries_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    redis_published: float = 0.0
    redis_received: float = 0.0
    redis_published_per_delivery: float = 0.0
    redis_received_per_delivery: float = 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


async def register_users(http: aiohttp.ClientSession, url: str, count: int) -> list[User]:
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> User:
        async with gate:
            body = {
                "email": f"bench-{uuid.uuid4().hex[:12]}@example.com",
                "password": "Bench-Passw0rd!",
                "firstName": "Bench",
                "lastName": str(i),
            }
            async with http.post(url + "/api/auth/register", json=body) as resp:
                assert resp.status == 201, await resp.text()
                token = (await resp.json())["accessToken"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(
                url + "/api/memories", json={"title": f"bench {i}"}, headers=headers
            ) as resp:
                assert resp.status == 201, await resp.text()
                memory = await resp.json()
            return User(token, str(memory.get("memory", memory)["id"]))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def run_phase(
    nodes: list[Node],
    users: list[User],
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
) -> Phase:
    phase = Phase(len(nodes), len(users), args.devices, args.rate, args.duration)
    run_id = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    last_delivery = 0.0
    devices: list[list[Device]] = []
    consumers: list[asyncio.Task[None]] = []
    all_delivered = asyncio.Event()

    async def consume(dev: Device) -> None:
        nonlocal last_delivery
        async for event in dev.events():
            meta = event.data.get("metadata") if isinstance(event.data, dict) else None
            if event.event == "message.created" and meta and meta.get("run") == run_id:
                now = time.perf_counter()
                latencies.append(now - meta["t"])
                last_delivery = now
                if phase.expected_deliveries and len(latencies) >= phase.expected_deliveries:
                    all_delivered.set()

    async with contextlib.AsyncExitStack() as stack:
        slot = 0
        for user in users:
            mine = []
            for _ in range(args.devices):
                node = nodes[slot % len(nodes)]
                slot += 1
                dev = Device(node.ws_url, user.token, codec=args.codec, max_backoff=1.0)
                await dev.start()
                stack.push_async_callback(dev.close)
                mine.append(dev)
            devices.append(mine)
        for mine in devices:
            for dev in mine:
                consumers.append(asyncio.create_task(consume(dev)))
        await asyncio.sleep(1.0)  # presence signals and claims settle before counting
        before = [await n.counters(http) for n in nodes]

        gate = asyncio.Semaphore(args.max_in_flight)
        pending: set[asyncio.Task[None]] = set()

        async def send(i: int) -> None:
            user_index = i % len(users)
            sender = devices[user_index][0]
            try:
                await sender.request(
                    "message.send",
                    timeout=30,
                    memory_id=users[user_index].memory_id,
                    client_msg_id=f"{run_id}-{i}",
                    content=f"bench message {i}",
                    metadata={"run": run_id, "t": time.perf_counter()},
                )
                phase.sent += 1
            except Exception:
                phase.send_errors += 1
            finally:
                gate.release()

        started = time.perf_counter()
        total = int(args.rate * args.duration)
        for i in range(total):
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(send(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        phase.expected_deliveries = phase.sent * args.devices
        if len(latencies) < phase.expected_deliveries:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_delivered.wait(), args.drain)
        await asyncio.sleep(0.5)  # local sockets get an event before it is published
        after = [await n.counters(http) for n in nodes]
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)

    phase.deliveries = len(latencies)
    phase.missing = max(0, phase.expected_deliveries - phase.deliveries)
    phase.duplicates = sum(d.duplicates for mine in devices for d in mine)
    phase.window_s = round(max(last_delivery, started) - started, 3)
    phase.deliveries_per_s = round(phase.deliveries / phase.window_s, 1) if phase.window_s else 0
    ordered = sorted(latencies)
    phase.latency_ms = {
        name: round(percentile(ordered, q) * 1000, 2)
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
    }

    def delta(name: str) -> float:
        return sum(a.get(name, 0.0) - b.get(name, 0.0) for a, b in zip(after, before, strict=True))

    phase.redis_published = delta("redis_messages_published_total")
    phase.redis_received = delta("redis_messages_received_total")
    if phase.deliveries:
        phase.redis_published_per_delivery = round(phase.redis_published / phase.deliveries, 4)
        phase.redis_received_per_delivery = round(phase.redis_received / phase.deliveries, 4)
    return phase


# -- environment ----------------------------------------------------------------------------


@asynccontextmanager
async def database(url: str | None, workdir: Path) -> AsyncIterator[str]:
    """The given database, or an embedded PostgreSQL in ``workdir`` for the run."""
    from memoryd.storage.database import create_database_if_missing
    from memoryd.storage.embedded import EmbeddedPostgres
    from memoryd.storage.migrate import migrate

    if url:
        await migrate(url)
        yield url
        return
    server = EmbeddedPostgres(workdir / "pg", fast_unsafe=True)
    admin = await asyncio.to_thread(server.start)
    try:
        await create_database_if_missing(admin, "memoryd_bench")
        dsn = server.dsn("memoryd_bench")
        await migrate(dsn)
        yield dsn
    finally:
        await asyncio.to_thread(server.stop)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def versions(dsn: str, redis_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        pg = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    client = redis_asyncio.from_url(redis_url, socket_timeout=5)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return {
        "python": platform.python_version(),
        "postgresql": pg,
        "redis": str(info.get("redis_version")),
        "memoryd": memoryd.__version__,
    }


def markdown(phases: list[Phase]) -> str:
    lines = [
        "| nodes | users x devices | rate (msg/s) | sent | deliveries | deliveries/s "
        "| p50 ms | p95 ms | p99 ms | max ms | missing | duplicates "
        "| Redis published / delivery | Redis received / delivery |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        lat = p.latency_ms
        lines.append(
            f"| {p.nodes} | {p.users} x {p.devices_per_user} | {p.rate:g} | {p.sent} "
            f"| {p.deliveries} | {p.deliveries_per_s:,.0f} | {lat['p50']} | {lat['p95']} "
            f"| {lat['p99']} | {lat['max']} | {p.missing} | {p.duplicates} "
            f"| {p.redis_published_per_delivery:.3f} | {p.redis_received_per_delivery:.3f} |"
        )
    return "\n".join(lines)


# The durable-send target at 2 nodes (issue 14): p99 send -> delivered on every device,
# nothing missing or duplicated.
P99_TARGET_MS = 50.0


def targets(phases: list[Phase]) -> list[str]:
    """``PASS``/``FAIL`` lines for the phases with 2 nodes."""
    out = []
    for p in phases:
        if p.nodes != 2:
            continue
        p99 = p.latency_ms.get("p99", float("inf"))
        ok = p99 < P99_TARGET_MS and not (p.missing or p.duplicates or p.send_errors)
        out.append(
            f"{'PASS' if ok else 'FAIL'}  durable message.send p99 send->delivered at 2 nodes "
            f"with Redis: {p99} ms at {p.rate:g} msg/s (bar < {P99_TARGET_MS:g} ms, none "
            "missing or duplicated)"
        )
    return out


def make_workdir() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="memoryd-bench-"))
    workdir.chmod(0o755)  # the embedded PostgreSQL may run as an unprivileged user
    return workdir


def write_json(path: str, report: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


async def main(args: argparse.Namespace) -> int:
    workdir = make_workdir()
    try:
        async with (
            database(args.database_url, workdir) as dsn,
            aiohttp.ClientSession() as http,
        ):
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("MEMORYD_") and k not in ("DATABASE_URL", "REDIS_URL")
            }
            env.update(
                DATABASE_URL=dsn,
                REDIS_URL=args.redis_url,
                MEMORYD_DATA_DIR=str(workdir / "node"),  # one JWT key for every node
                MEMORYD_LOG_LEVEL="warning",
                MEMORYD_RATE_LIMIT_AUTH="off",
                MEMORYD_RATE_LIMIT_API="off",
                MEMORYD_WS_REQUESTS_PER_SECOND="1000",
                MEMORYD_WS_REQUEST_BURST="1000",
                MEMORYD_ACCESS_TOKEN_TTL="3600",
            )
            users: list[User] = []
            phases: list[Phase] = []
            for count in args.nodes:
                async with running_nodes(count, env, workdir, http) as nodes:
                    if not users:
                        users = await register_users(http, nodes[0].url, args.users)
                    phase = await run_phase(nodes, users, args, http)
                    phases.append(phase)
                    print(
                        f"{count} node(s): {phase.deliveries} deliveries, "
                        f"{phase.deliveries_per_s:,.0f}/s, p99 {phase.latency_ms['p99']} ms",
                        file=sys.stderr,
                    )
            report = {
                "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                "machine": {
                    "nproc": os.cpu_count(),
                    "cpu": cpu_model(),
                    "platform": platform.platform(),
                },
                "versions": await versions(dsn, args.redis_url),
                "database": "DATABASE_URL" if args.database_url else "embedded PostgreSQL",
                "phases": [asdict(p) for p in phases],
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(phases))
    for target in targets(phases):
        print(target)
    if args.json:
        write_json(args.json, report)
        print(f"\nJSON written to {args.json}", file=sys.stderr)
    failed = any(p.missing or p.duplicates or p.send_errors for p in phases)
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20, help="users (20)")
    parser.add_argument("--devices", type=int, default=3, help="devices per user (3)")
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s, all users (100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending (10)")
    parser.add_argument("--nodes", default="1,2", help="node counts to run, comma-separated (1,2)")
    parser.add_argument("--codec", choices=("json", "msgpack"), default="msgpack")
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for stragglers (10)")
    parser.add_argument("--max-in-flight", type=int, default=256, help="unanswered sends (256)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    parser.add_argument(
        "--json",
        default=str(Path(tempfile.gettempdir()) / "memoryd-bench-multinode.json"),
        help="where to write the figures as JSON ('' for nowhere)",
    )
    args = parser.parse_args(argv)
    args.nodes = [int(n) for n in str(args.nodes).split(",") if n.strip()]
    for name, value in (
        ("users", args.users),
        ("devices", args.devices),
        ("rate", args.rate),
        ("duration", args.duration),
    ):
        if not 0 < value <= LIMITS[name]:
            parser.error(f"--{name} must be > 0 and <= {LIMITS[name]}")
    if not args.nodes or not all(0 < n <= LIMITS["nodes"] for n in args.nodes):
        parser.error(f"--nodes must be counts from 1 to {LIMITS['nodes']}")
    if not 0 < args.drain <= 60:
        parser.error("--drain must be > 0 and <= 60")
    return args


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A hard bound on the whole run: start-up, registration, every phase and its drain.
    budget = 120 + args.users * 0.5 + len(args.nodes) * (args.duration + args.drain + 60)

    async def bounded() -> int:
        async with asyncio.timeout(budget):
            return await main(args)

    return uvloop.run(bounded())


if __name__ == "__main__":
    sys.exit(run())
