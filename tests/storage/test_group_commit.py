"""Group commit keeps the connection a batch ran on for the next batch, and gives it back
to the pool when idle, when the pool is crowded, after an error and on close."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import pytest

from memoryd.storage.database import Database
from memoryd.storage.group_commit import GroupCommit

pytestmark = pytest.mark.storage

QUERY = "SELECT $1::int AS n, pg_backend_pid() AS pid"


async def _idle_until(db: Database, want: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while db.pool.get_idle_size() != want:
        assert time.monotonic() < deadline, f"{db.pool.get_idle_size()} idle, not {want}"
        await asyncio.sleep(0.02)


async def test_batches_reuse_one_kept_connection_which_goes_back_when_idle(
    database_url: str,
) -> None:
    db = await Database.connect(database_url, min_size=2, max_size=4)
    try:
        commit = GroupCommit(db, QUERY, keep_for=0.3)
        idle = db.pool.get_idle_size()
        rows = [await commit.run(i, i) for i in range(5)]  # one after the other
        assert [r["n"] for r in rows if r] == [0, 1, 2, 3, 4]
        assert len({r["pid"] for r in rows if r}) == 1  # the same connection each time
        assert db.pool.get_idle_size() == idle - 1  # kept out of the pool between batches
        await _idle_until(db, idle)  # 0.3 s without a batch: back in the pool
        assert commit._kept == []
    finally:
        await db.close()


async def test_a_crowded_pool_gets_the_connection_back_at_once(database_url: str) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        commit = GroupCommit(db, QUERY, keep_for=60)
        await commit.run("a", 1)
        # The pool's only connection: anyone else must not wait a minute for it.
        assert await asyncio.wait_for(db.fetchval("SELECT 2"), 2.0) == 2
    finally:
        await db.close()


async def test_a_failed_statement_gives_its_connection_back(database_url: str) -> None:
    db = await Database.connect(database_url, min_size=2, max_size=4)
    try:
        commit = GroupCommit(db, "SELECT 1 / $1::int AS n", keep_for=60)
        idle = db.pool.get_idle_size()
        with pytest.raises(asyncpg.DivisionByZeroError):
            await commit.run("a", 0)
        assert commit._kept == [] and db.pool.get_idle_size() == idle
        assert (await commit.run("a", 1)) is not None  # and the next batch runs as usual
    finally:
        await db.close()


async def test_close_takes_the_kept_connections_back_without_waiting(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.connect(database_url, min_size=2, max_size=4)
    commit = GroupCommit(db, QUERY, keep_for=60)
    await asyncio.gather(*(commit.run(i, i) for i in range(8)))
    assert commit._kept
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="memoryd.storage"):
        await db.close(timeout=5)
    assert time.monotonic() - started < 2
    assert "cut off" not in caplog.text and commit._kept == []
