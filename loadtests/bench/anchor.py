"""Storage anchor: ``message.send``'s database work alone, straight on asyncpg.

Each transaction has the shape `MessageStore.create` gives a send: in one transaction
the per-memory seq increment, the message insert (whose unique index on ``clientMsgId``
makes a resend a no-op) and the event-log append (the same statements; ``_APPEND`` and the column
list are imported from memoryd's storage layer so they cannot drift). ``--concurrency``
connections (memoryd's pool size) run closed loops, each on users of its own, so no two
writers queue on one user's row lock; memoryd's senders are spread over users the same way.

The ``asyncpg`` line keeps that transaction shape (three statements between BEGIN and
COMMIT, five round trips), as it had before the one-statement send, so the ratio of
memoryd to it stays comparable across changes. A second raw line, ``asyncpg one
statement``, runs memoryd's one-statement send (`_SEND_PLAIN`, imported) on plain
connections: the best asyncpg can do with that shape. A third runs `MessageStore.create`
itself (with the plain-send path a server uses for these memories) through memoryd's
pool, in this process, to show what the storage layer's Python adds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from loadtests.bench.common import Account, no_collector_pauses, percentiles
from memoryd.handlers.memo.reply import MEMORY_METADATA_KEYS
from memoryd.storage.database import Database
from memoryd.storage.events import _APPEND
from memoryd.storage.memories import MemoryStore
from memoryd.storage.messages import _SEND_PLAIN, MessageStore, NewMessage, PlainSend
from memoryd.storage.rows import MESSAGE_COLUMNS

_SEQ = """UPDATE memories SET last_message_seq = last_message_seq + 1,
              message_count = message_count + 1
          WHERE user_id = $1 AND id = $2 RETURNING last_message_seq"""
_INSERT = f"""INSERT INTO messages (memory_id, user_id, seq, client_msg_id, content,
                  message_type, metadata, attachments, is_ai_generated,
                  parent_message_id, status)
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
              RETURNING {MESSAGE_COLUMNS}"""
_encode = msgspec.json.Encoder().encode


async def memories_for(dsn: str, accounts: Sequence[Account]) -> list[uuid.UUID]:
    """One memory per account (through memoryd's storage layer)."""
    db = await Database.connect(dsn, min_size=1, max_size=8)
    try:
        store = MemoryStore(db)
        sem = asyncio.Semaphore(8)

        async def one(a: Account) -> uuid.UUID:
            async with sem:
                memory, _ = await store.create(a.user_id, {"title": "anchor"})
                return memory.id

        return list(await asyncio.gather(*(one(a) for a in accounts)))
    finally:
        await db.close()


async def _init(conn: asyncpg.Connection) -> None:
    # jsonb goes in as the JSON text the application encoded, as memoryd's codec does
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: v, decoder=lambda v: v, format="text"
    )


Send = Callable[[int, int, uuid.UUID, uuid.UUID], Awaitable[None]]


async def _closed_loops(
    kind: str,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    send: Send,
    *,
    concurrency: int,
    duration: float,
) -> dict[str, Any]:
    """``concurrency`` workers, each sending (``send(worker, i, user, memory)``) as fast
    as its last send returns, for ``duration`` seconds; each worker its share of pairs."""
    latencies: list[float] = []
    done = 0
    stop_at = 0.0

    async def worker(w: int) -> None:
        nonlocal done
        mine = pairs[w::concurrency] or pairs
        i = 0
        while time.perf_counter() < stop_at:
            user_id, memory_id = mine[i % len(mine)]
            t0 = time.perf_counter()
            await send(w, i, user_id, memory_id)
            latencies.append(time.perf_counter() - t0)
            i += 1
            done += 1

    with no_collector_pauses():
        t0 = time.perf_counter()
        stop_at = t0 + duration
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "kind": kind,
        "concurrency": concurrency,
        "transactions": done,
        "tps": done / elapsed,
        "latency_ms": {k: v * 1000 for k, v in percentiles(latencies).items()},
    }


@asynccontextmanager
async def _connections(dsn: str, n: int) -> AsyncIterator[list[asyncpg.Connection]]:
    """``n`` plain asyncpg connections, closed at the end."""
    conns = [await asyncpg.connect(dsn) for _ in range(n)]
    try:
        for c in conns:
            await _init(c)
        yield conns
    finally:
        for c in conns:
            await c.close()


async def raw(
    dsn: str,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    concurrency: int,
    duration: float,
    content: str,
) -> dict[str, Any]:
    """Closed loops of the send transaction on plain asyncpg connections."""
    run = uuid.uuid4().hex[:8]
    conns: list[asyncpg.Connection] = []

    async def send(w: int, i: int, user_id: uuid.UUID, memory_id: uuid.UUID) -> None:
        conn = conns[w]
        async with conn.transaction():
            seq = await conn.fetchval(_SEQ, user_id, memory_id)
            row = await conn.fetchrow(
                _INSERT, memory_id, user_id, seq, f"a-{run}-{w}-{i}", content, "text", None,
                "[]", False, None, "sent",
            )  # fmt: skip
            await conn.fetchrow(_APPEND, user_id, "message.created", _encode(dict(row)).decode())

    async with _connections(dsn, concurrency) as opened:
        conns.extend(opened)
        return await _closed_loops(
            "asyncpg", pairs, send, concurrency=concurrency, duration=duration
        )


async def raw_one_statement(
    dsn: str,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    concurrency: int,
    duration: float,
    content: str,
) -> dict[str, Any]:
    """Closed loops of memoryd's one-statement send on plain asyncpg connections, the
    event payload encoded by the application as memoryd does."""
    run = uuid.uuid4().hex[:8]
    keys = list(MEMORY_METADATA_KEYS)
    conns: list[asyncpg.Connection] = []

    async def send(w: int, i: int, user_id: uuid.UUID, memory_id: uuid.UUID) -> None:
        cid = f"o-{run}-{w}-{i}"
        now = datetime.now(UTC)
        message_id = uuid.uuid4()
        payload = _encode(
            {"id": message_id, "memoryId": memory_id, "userId": user_id, "seq": 0,
             "clientMsgId": cid, "content": content, "messageType": "text",
             "metadata": None, "attachments": [], "files": [], "isAiGenerated": False,
             "parentId": None, "status": "sent", "createdAt": now, "updatedAt": now}
        ).decode()  # fmt: skip
        row = await conns[w].fetchrow(
            _SEND_PLAIN, user_id, memory_id, cid, message_id, content, "text", None,
            "sent", payload, keys, now,
        )  # fmt: skip
        assert row is not None and row["message_seq"] is not None

    async with _connections(dsn, concurrency) as opened:
        conns.extend(opened)
        return await _closed_loops(
            "asyncpg one statement", pairs, send, concurrency=concurrency, duration=duration
        )


async def storage_layer(
    dsn: str,
    pairs: Sequence[tuple[uuid.UUID, uuid.UUID]],
    *,
    concurrency: int,
    duration: float,
    content: str,
) -> dict[str, Any]:
    """The same closed loops through `MessageStore.create` and memoryd's pool: the
    one-statement send with group commit, as a server runs it."""
    db = await Database.connect(dsn, min_size=concurrency, max_size=concurrency)
    store = MessageStore(db)
    plain = PlainSend(metadata_keys=MEMORY_METADATA_KEYS)  # what a server passes
    run = uuid.uuid4().hex[:8]

    async def send(w: int, i: int, user_id: uuid.UUID, memory_id: uuid.UUID) -> None:
        new = NewMessage(content=content, client_msg_id=f"s-{run}-{w}-{i}")
        await store.create(user_id, memory_id, new, plain=plain)

    try:
        return await _closed_loops(
            "storage layer", pairs, send, concurrency=concurrency, duration=duration
        )
    finally:
        await db.close()
