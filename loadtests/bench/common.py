"""What every benchmark shares: the database, server processes, /proc readings, users.

* `Postgres`: the embedded PostgreSQL 18 of memoryd (production settings: fsync on) in a
  temporary directory, or ``--database-url``; each run creates its own database there,
  migrates it and drops it at the end.
* `ServerProcess`: ``memoryd serve`` or a peer relay, as its own process on a free
  127.0.0.1 port, optionally pinned to one core; `ProcStats` reads its CPU time and RSS
  from ``/proc/<pid>``.
* `provision`: users with tokens, written through memoryd's storage layer (the same rows
  ``POST /api/auth/register`` writes) with one argon2 hash shared by all, and access
  tokens signed with the key the server is given (``MEMORYD_JWT_PRIVATE_KEY_FILE``):
  registering 3,000 users over HTTP would spend five minutes in argon2.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from memoryd.handlers.auth import DEFAULT_CATEGORIES
from memoryd.handlers.tokens import TokenIssuer
from memoryd.storage.database import Database, create_database_if_missing, drop_database
from memoryd.storage.embedded import EmbeddedPostgres
from memoryd.storage.migrate import migrate
from memoryd.storage.users import UserStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MEMORYD = BIN / "memoryd"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PASSWORD = "Passw0rd!"
HOST = "127.0.0.1"  # every benchmark targets this machine only

# Hard bounds, whatever the command line says.
MAX_USERS = 5000
MAX_SOCKETS = 12000
MAX_RATE = 200_000.0


# -- the load generator's own pauses ---------------------------------------------------------


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The load generator's cyclic garbage collector off while it measures (collected
    before). Its generation-2 collections walk the objects of every client socket: one
    took 68 ms in a durable step of 900 sockets, and every delivery in flight then
    arrived 68 ms late, charged to the server's p99 (docs/benchmarks.md, 2026-12-04).
    What a step allocates is freed by reference counting; cycles wait for the next step."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count() or 1,
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg": loadavg(),
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def versions(pg_version: str | None = None) -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    redis_server = None
    binary = shutil.which("redis-server")
    if binary:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=5
            ).stdout
            redis_server = next((p[2:] for p in out.split() if p.startswith("v=")), out.strip())
    return {
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_server,
        "memoryd": dist("memoryd"),
        "aiohttp": dist("aiohttp"),
        "websockets": dist("websockets"),
        "python-socketio": dist("python-socketio"),
        "python-engineio": dist("python-engineio"),
        "msgspec": dist("msgspec"),
        "uvloop": dist("uvloop"),
        "asyncpg": dist("asyncpg"),
        "locust": dist("locust"),
    }


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted``; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin(pid: int, core: int | None) -> None:
    """Pin a process to one core (when the machine has more than one)."""
    if core is None or (os.cpu_count() or 1) < 2:
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {core % (os.cpu_count() or 1)})


def family(parent: int) -> list[int]:
    """``parent`` and the processes it forked (a local PostgreSQL's postmaster and its
    backends), from ``/proc``."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    pids.append(int(entry.name))
    return pids


def family_cpu_seconds(parent: int) -> float:
    """CPU seconds (user + system) of ``parent`` and the processes it forked; a process
    that ended meanwhile counts for nothing."""
    total = 0.0
    for pid in family(parent):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += ProcStats(pid).cpu_seconds()
    return total


def pin_postgres(backend_pid: int, core: int | None) -> list[int]:
    """Pin a local PostgreSQL to one core: its postmaster (the parent of ``backend_pid``,
    any backend's ``pg_backend_pid()``) and every process it has forked, each with all its
    threads; backends forked later inherit the postmaster's affinity. The same as
    ``taskset -a -p -c <core> <pid>`` on the postmaster and each child. Returns the pids
    pinned (none when PostgreSQL is not local or the machine has one core)."""
    if core is None or (os.cpu_count() or 1) < 2:
        return []
    try:
        stat = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError:
        return []  # not on this machine (--database-url elsewhere)
    postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    pids = family(postmaster)
    cpu = {core % (os.cpu_count() or 1)}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                os.sched_setaffinity(int(task.name), cpu)
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- /proc -------------------------------------------------------------------------------------


class ProcStats:
    """CPU seconds and RSS of one process, from ``/proc/<pid>``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_bytes(self) -> int:
        return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * PAGE


class CpuClock:
    """Server CPU and wall time over a window, and this process's own CPU (is the load
    generator the bottleneck?)."""

    def __init__(self, server: ProcStats | None) -> None:
        self.server = server
        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._srv = server.cpu_seconds() if server else 0.0

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        srv = (self.server.cpu_seconds() - self._srv) if self.server else 0.0
        return {
            "wall_s": wall,
            "server_cpu_s": srv,
            "server_cpu_util": srv / wall if wall else 0.0,
            "client_cpu_util": own / wall if wall else 0.0,
        }


# -- PostgreSQL --------------------------------------------------------------------------------


class Postgres:
    """The database of one benchmark run (created, migrated, dropped at the end)."""

    def __init__(self, admin_dsn: str, dsn: str, name: str, version: str) -> None:
        self.admin_dsn = admin_dsn
        self.dsn = dsn
        self.name = name
        self.version = version


@asynccontextmanager
async def postgres(database_url: str | None, workdir: Path) -> AsyncIterator[Postgres]:
    server: EmbeddedPostgres | None = None
    if database_url:
        admin_dsn = database_url
    else:
        server = EmbeddedPostgres(workdir / "pg")  # production settings: fsync on
        admin_dsn = await asyncio.to_thread(server.start)
    name = f"memoryd_bench_{uuid.uuid4().hex[:10]}"
    try:
        await create_database_if_missing(admin_dsn, name)
        dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
        await migrate(dsn)
        db = await Database.connect(dsn, min_size=1, max_size=2)
        try:
            pg_version = await db.server_version()
        finally:
            await db.close()
        if server is not None:  # not a --database-url server's WAL: it may serve others
            await warm_wal(dsn)
        yield Postgres(admin_dsn, dsn, name, pg_version)
    finally:
        with contextlib.suppress(Exception):
            await drop_database(admin_dsn, name)
        if server is not None:
            await asyncio.to_thread(server.stop)


WARM_WAL_MIB = 1024  # PostgreSQL's default max_wal_size: what a checkpoint cycle keeps


async def warm_wal(dsn: str, mib: int = WARM_WAL_MIB) -> None:
    """Give a new cluster the recycled WAL segments a running one has.

    A new cluster has no WAL segments ahead of the one it writes: each next 16 MiB segment
    is created and zero-filled (``wal_init_zero``) while commits wait for it
    (``IO:WalInitWrite``), a 30-100 ms stall every few seconds under durable sends. A
    cluster that has checkpointed renames its used segments into the next ones instead
    (keeping about a checkpoint cycle's worth), so in service it seldom creates one. This
    writes ``mib`` of WAL (a throwaway table) and checkpoints, which leaves that many
    segments recycled ahead, as after a checkpoint in service."""
    rows = mib * 1024 * 1024 // 8192 * 4  # 4 rows of ~1.9 kB a page: no TOAST, no compression
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_warm_wal")
        await conn.execute(
            f"CREATE TABLE bench_warm_wal AS SELECT repeat('w', 1900) AS w "
            f"FROM generate_series(1, {rows})"
        )
        await conn.execute("DROP TABLE bench_warm_wal")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def workdir() -> Path:
    """A scratch directory the embedded PostgreSQL's unprivileged user can traverse."""
    path = Path(tempfile.mkdtemp(prefix="memoryd-bench-"))
    path.chmod(0o755)
    return path


# -- server processes -----------------------------------------------------------------------


def write_signing_key(path: Path) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return pem


def memoryd_env(dsn: str, data_dir: Path, key_file: Path, **extra: str) -> dict[str, str]:
    """A node for load: REST limits off (load testing only), socket limits raised."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
    env.pop("REDIS_URL", None)
    env.update(
        DATABASE_URL=dsn,
        MEMORYD_DATA_DIR=str(data_dir),
        MEMORYD_JWT_PRIVATE_KEY_FILE=str(key_file),
        MEMORYD_LOG_LEVEL="warning",
        MEMORYD_RATE_LIMIT_AUTH="off",
        MEMORYD_RATE_LIMIT_API="off",
        MEMORYD_WS_REQUESTS_PER_SECOND="3600",
        MEMORYD_WS_REQUEST_BURST="100000",
        MEMORYD_WS_HELLO_TIMEOUT="60",
    )
    env.update(extra)
    return env


class ServerProcess:
    """One server under test: ``memoryd serve`` or a peer relay, on 127.0.0.1:<port>."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        *,
        port: int,
        ready_path: str | None = None,
        core: int | None = 0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.port = port
        self.ready_path = ready_path
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats: ProcStats | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    async def start(self, timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        # The child inherits this process's raised open-file limit (see raise_fd_limit).
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        pin(self.proc.pid, self.core)
        self.stats = ProcStats(self.proc.pid)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                if await self._ready(http):
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        if self.ready_path is None:
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                return False
            writer.close()
            return True
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(
                self.url + self.ready_path, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                return resp.status == 200
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@asynccontextmanager
async def running(server: ServerProcess) -> AsyncIterator[ServerProcess]:
    await server.start()
    try:
        yield server
    finally:
        server.kill()


class Memoryd:
    """How to start memoryd nodes for one run, and the key to mint their tokens with."""

    def __init__(self, pg: Postgres, scratch: Path) -> None:
        self.pg = pg
        self.scratch = scratch
        self.key_file = scratch / "jwt_rs256.pem"
        self.key_pem = write_signing_key(self.key_file)
        public = serialization.load_pem_private_key(self.key_pem, password=None).public_key()
        public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.tokens = TokenIssuer(self.key_pem, public_pem, access_ttl=3600, refresh_ttl=3600)

    def server(self, name: str = "memoryd", *, core: int | None = 0, **env: str) -> ServerProcess:
        port = free_port()
        data_dir = self.scratch / f"node-{name}-{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        return ServerProcess(
            name,
            [str(MEMORYD), "serve", "--host", HOST, "--port", str(port)],
            memoryd_env(self.pg.dsn, data_dir, self.key_file, **env),
            self.scratch / f"{name}-{port}.log",
            port=port,
            ready_path="/ready",
            core=core,
        )


def relay_server(kind: str, scratch: Path, *, core: int | None = 0) -> ServerProcess:
    """A peer: ``ws-relay`` (bare websockets) or ``socketio`` (python-socketio on aiohttp)."""
    script = {"ws-relay": "ws_relay.py", "socketio": "socketio_relay.py"}[kind]
    port = free_port()
    return ServerProcess(
        kind,
        [sys.executable, str(ROOT / "loadtests" / "baselines" / script), "--port", str(port)],
        {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")},
        scratch / f"{kind}-{port}.log",
        port=port,
        core=core,
    )


# -- users ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user_id: uuid.UUID
    email: str
    token: str


async def provision(
    dsn: str, tokens: TokenIssuer, count: int, *, parallel: int = 8
) -> list[Account]:
    """``count`` users with their default categories and an empty event log, as registration
    writes them, each with an access token."""
    count = min(count, MAX_USERS)
    from memoryd.handlers.passwords import hash_password

    password_hash = await hash_password(PASSWORD)
    db = await Database.connect(dsn, min_size=1, max_size=parallel)
    users = UserStore(db)
    run = uuid.uuid4().hex[:8]
    accounts: list[Account] = []
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with sem:
            user = await users.create(
                email=f"bench-{run}-{i}@example.com",
                password_hash=password_hash,
                first_name="Bench",
                last_name=f"User{i}",
                default_categories=DEFAULT_CATEGORIES,
            )
            accounts.append(Account(user.id, user.email, tokens.issue_access(user)))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await db.close()
    return accounts


def percentiles(
    samples: Sequence[float], points: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples`` (in the samples' unit), plus ``max``."""
    if not samples:
        return {**{f"p{p:g}": float("nan") for p in points}, "max": float("nan")}
    ordered = sorted(samples)
    n = len(ordered)
    out = {f"p{p:g}": ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] for p in points}
    out["max"] = ordered[-1]
    return out


# -- the server's own histograms ------------------------------------------------------------


async def scrape_histograms(
    server: ServerProcess, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """p50/p99 (bucket upper bounds) and counts of the server's Prometheus histograms
    ``names``, per value of their one label (a send's stage, a GC generation), keyed
    ``name:value``. Counted since the server started (warm-up included)."""
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    buckets: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        for name in names:
            if not line.startswith(f"{name}_bucket{{"):
                continue
            labels, value = line[len(name) + 8 :].rsplit("} ", 1)
            parts = dict(p.split("=", 1) for p in labels.split(","))
            key = next((v.strip('"') for k, v in parts.items() if k != "le"), "")
            le = parts["le"].strip('"')
            bound = float("inf") if le == "+Inf" else float(le)
            buckets.setdefault(f"{name}:{key}", []).append((bound, float(value)))
    out: dict[str, dict[str, Any]] = {}
    for key, points in buckets.items():
        points.sort()
        count = points[-1][1]
        if not count:
            continue

        def quantile(
            q: float, points: list[tuple[float, float]] = points, n: float = count
        ) -> float:
            return next(b for b, c in points if c >= q * n) * 1000

        out[key] = {"count": int(count), "p50_ms_le": quantile(0.5), "p99_ms_le": quantile(0.99)}
    return out
