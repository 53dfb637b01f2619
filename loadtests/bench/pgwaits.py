"""What memoryd's PostgreSQL sessions wait on during a benchmark phase.

Samples ``pg_stat_activity`` every ``interval`` seconds (memoryd's connections, by their
``application_name``) and counts each backend's state and wait event, and reads the
checkpointer's and the WAL's counters before and after: lock waits, WAL flushes
(``IO:WalSync``/``LWLock:WALWrite``), client reads (``Client:ClientRead``: the backend
waits for memoryd, i.e. the time is the server's) and checkpoints during the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

_SAMPLE = """SELECT state, COALESCE(wait_event_type || ':' || wait_event, 'CPU') AS wait
             FROM pg_stat_activity WHERE application_name = 'memoryd' AND pid <> pg_backend_pid()"""
_COUNTERS = """SELECT (SELECT num_timed FROM pg_stat_checkpointer) AS checkpoints_timed,
                      (SELECT num_requested FROM pg_stat_checkpointer) AS checkpoints_requested,
                      (SELECT wal_records FROM pg_stat_wal) AS wal_records"""


async def _counters(conn: asyncpg.Connection) -> dict[str, int]:
    try:
        row = await conn.fetchrow(_COUNTERS)
    except asyncpg.PostgresError:  # older servers name these views differently
        return {}
    return {k: int(v) for k, v in dict(row or {}).items() if v is not None}


@asynccontextmanager
async def sampled(dsn: str, result: dict[str, Any], interval: float = 0.02) -> AsyncIterator[None]:
    """Fill ``result`` with the wait counts and counter deltas of the enclosed phase."""
    conn = await asyncpg.connect(dsn)
    waits: Counter[str] = Counter()
    samples = 0

    async def loop() -> None:
        nonlocal samples
        while True:
            for row in await conn.fetch(_SAMPLE):
                if row["state"] == "active":
                    waits[row["wait"]] += 1
                else:
                    waits[f"{row['state']}"] += 1
            samples += 1
            await asyncio.sleep(interval)

    before = await _counters(conn)
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        after = await _counters(conn)
        await conn.close()
        result["samples"] = samples
        result["backend_states"] = dict(waits.most_common(12))
        result["during"] = {k: after[k] - before.get(k, 0) for k in after}
