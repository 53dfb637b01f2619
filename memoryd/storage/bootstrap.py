"""Reach a ready database: the configured server, or the embedded one; migrated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from memoryd.errors import ConfigError
from memoryd.storage.database import Database, create_database_if_missing
from memoryd.storage.embedded import EmbeddedPostgres
from memoryd.storage.migrate import migrate

log = logging.getLogger("memoryd.storage")

MIN_SERVER_VERSION = 150000
EMBEDDED_DATABASE = "memoryd"


@asynccontextmanager
async def database_dsn(database_url: str | None, data_dir: Path) -> AsyncIterator[str]:
    """Yield a DSN; with no ``database_url`` run the embedded server for the duration."""
    if database_url:
        yield database_url
        return
    server = EmbeddedPostgres(data_dir / "pg")
    admin_dsn = await asyncio.to_thread(server.start)
    try:
        await create_database_if_missing(admin_dsn, EMBEDDED_DATABASE)
        log.info("using embedded PostgreSQL in %s", server.pgdata)
        yield server.dsn(EMBEDDED_DATABASE)
    finally:
        await asyncio.to_thread(server.stop)


async def open_database(dsn: str, *, min_size: int = 2, max_size: int = 20) -> Database:
    """Check the server, apply migrations and open the pool; one clear error if unreachable."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            version = await conn.fetchval("SHOW server_version_num")
        finally:
            await conn.close()
        if int(version) < MIN_SERVER_VERSION:
            raise ConfigError(
                f"PostgreSQL >= 15 is required (the server runs {int(version) // 10000})"
            )
        await migrate(dsn)
        return await Database.connect(dsn, min_size=min_size, max_size=max_size)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ConfigError(f"cannot use the database: {type(exc).__name__}: {exc}") from None
