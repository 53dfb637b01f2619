"""The asyncpg pool and the transaction helper every repository uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

log = logging.getLogger("memoryd.storage")

# Told how long a stage of a request took (pool_acquire, statements, commit): the
# server's Prometheus histogram of a send's stages.
Observe = Callable[[str, float], None]


def unobserved(stage: str, seconds: float) -> None:
    """The `Observe` of a store no server has given its histogram (the CLI, tests)."""


_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _encode_json(value: Any) -> str:
    return _json_encode(value).decode()


def pack_vector(vector: Sequence[float] | bytes) -> bytes:
    """pgvector's binary form of a vector: dimension, a reserved 0, big-endian float4s."""
    if isinstance(vector, bytes):
        return vector  # packed already (an array of vectors is packed element by element)
    return struct.pack(f">HH{len(vector)}f", len(vector), 0, *vector)


def _unpack_vector(data: bytes) -> list[float]:
    (dimension,) = struct.unpack_from(">H", data)
    return list(struct.unpack_from(f">{dimension}f", data, 4))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, schema="pg_catalog", encoder=_encode_json, decoder=_json_decode
        )
    # pgvector's `vector` in binary, where the extension is (migrations create it before
    # the pool opens): asyncpg's float-by-float array encoding costs 7x more.
    with contextlib.suppress(ValueError):  # no such type here
        await conn.set_type_codec(
            "vector", encoder=pack_vector, decoder=_unpack_vector, format="binary"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release: nothing to reset. Pooled connections change no session state (no SET,
    LISTEN, cursors or session advisory locks; migrations use a connection of their own), so
    asyncpg's reset query, one more round trip on every release, is skipped. asyncpg still
    rolls back a transaction left open."""


class Database:
    """A pool plus small helpers; repositories share one instance."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    def before_close(self, give_back: Callable[[], Awaitable[None]]) -> None:
        """``give_back`` returns connections a repository keeps out of the pool between
        uses (`GroupCommit`); `close` awaits it before closing the pool."""
        self._before_close.append(give_back)

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 20) -> Database:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
            server_settings={"application_name": "memoryd"},
        )
        return cls(pool)

    async def close(self, timeout: float = 10.0) -> None:
        """Close gracefully: asyncpg waits for every acquired connection to come back. One
        that has not come back within ``timeout`` (its holder hangs) is cut off instead."""
        in_use = self.pool.get_size() - self.pool.get_idle_size()
        try:
            async with asyncio.timeout(timeout):
                for give_back in self._before_close:
                    await give_back()
                in_use = self.pool.get_size() - self.pool.get_idle_size()
                await self.pool.close()
        except TimeoutError:
            log.warning("%d connection(s) in use %g s into close: cut off", in_use, timeout)
            self.pool.terminate()

    @asynccontextmanager
    async def transaction(
        self, observe: Observe | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction; ``observe`` is told how long the pool
        acquire, the statements (the body) and the commit took."""
        if observe is None:
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn
            return
        t0 = time.perf_counter()
        async with self.pool.acquire() as conn:
            t1 = time.perf_counter()
            observe("pool_acquire", t1 - t0)
            async with conn.transaction():
                yield conn
                t2 = time.perf_counter()
                observe("statements", t2 - t1)
            observe("commit", time.perf_counter() - t2)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self.pool.fetch(query, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self.pool.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        return await self.pool.execute(query, *args)  # type: ignore[no-any-return]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def server_version(self) -> str:
        return str(await self.pool.fetchval("SHOW server_version"))


async def create_database_if_missing(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE ``name`` when absent (the embedded server starts with ``postgres`` only)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Another process may win the race: either error says the database is there.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
