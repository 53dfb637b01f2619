"""Group commit: concurrent runs of one statement share a round trip and a commit.

A durable send is bound by its commit (the WAL flush), not by its statement. While the
database flushes, more sends arrive; instead of queueing each for a pooled connection
of its own (and each waiting for a flush of its own), the ones that came while the
batches in flight ran go together in the next batch: asyncpg's ``fetchmany``, one
Bind/Execute per call and a single Sync, which PostgreSQL runs as one implicit
transaction. N sends then cost one round trip and one WAL flush, and a stall of the
disk is paid once by everyone waiting instead of draining a queue one commit at a time.
At low load a call finds nothing in flight and runs at once, alone: no added latency.

Order and locks:

* A batch takes at most one call per key (a user), and a key with a batch in flight
  waits for it: a key's calls run one after the other, in the order they came, and
  each batch holds at most one statement's row locks per user, so a batch takes a user's
  rows in the same order as any other write of that user (migration 0008).
* A batch runs its calls sorted by key: two batches (of two nodes) that share users
  lock them in the same order, never in a circle.
* A batch that fails (one call's error aborts the transaction, and nothing of it is
  kept) runs its calls again one by one, each its own implicit transaction, so each
  caller gets its own result or its own error.

Connections: a batch keeps the pooled connection it ran on for the next batch (at most
``max_batches`` of them), instead of a pool acquire and release per batch: asyncpg's
release shields a task of its own and re-arms an inactivity timer: about 30 us of CPU a
batch, half again what a one-row statement costs the client (docs/benchmarks.md). A kept
connection goes back to the pool when the pool has no idle one left for anyone else (as
of its last look, at most 10 ms ago: asyncpg counts by walking every holder), after
``keep_for`` seconds without a batch, after any error, and when the database closes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

import asyncpg

from memoryd.storage.database import Database, Observe, unobserved

_LOOK_EVERY = 0.01  # seconds between looks at how crowded the pool is


class _Call:
    __slots__ = ("args", "key", "queued_at", "result")

    def __init__(self, key: Any, args: Sequence[Any], queued_at: float) -> None:
        self.key = key
        self.args = args
        self.queued_at = queued_at
        self.result: asyncio.Future[asyncpg.Record | None] = (
            asyncio.get_running_loop().create_future()
        )


class GroupCommit:
    """Runs ``query`` (one statement, returning one row) for many callers at once."""

    def __init__(
        self, db: Database, query: str, *, max_batches: int = 4, max_batch: int = 64,
        keep_for: float = 1.0,
    ) -> None:  # fmt: skip
        self.db = db
        self.query = query
        self.max_batches = max_batches
        self.max_batch = max_batch
        self.keep_for = keep_for
        self.observe: Observe = unobserved
        self._queue: deque[_Call] = deque()
        self._busy: set[Hashable] = set()  # keys with a batch in flight
        self._running: set[asyncio.Task[None]] = set()
        self._kept: list[asyncpg.Connection] = []  # idle between batches, out of the pool
        self._last_batch = 0.0
        self._reaper: asyncio.TimerHandle | None = None
        self._closing = False
        self._crowded = False  # the pool had no idle connection at the last look
        self._looked_at = -1.0
        self.batches = 0  # batches started, and the calls in them (tests, metrics)
        self.calls = 0
        db.before_close(self.give_back)

    async def run(self, key: Any, *args: Any) -> asyncpg.Record | None:
        """The statement's row for ``args``, run in a batch with whatever else waits.
        ``key`` (a user id) is hashable and ordered: the calls of one key run in order."""
        call = _Call(key, args, time.perf_counter())
        self._queue.append(call)
        self._start()
        return await call.result

    def _start(self) -> None:
        while self._queue and len(self._running) < self.max_batches:
            batch = self._take()
            if not batch:
                return  # every waiting key has a batch in flight: one of them ends soon
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _take(self) -> list[_Call]:
        """The first waiting call of each key with no batch in flight, in queue order."""
        batch: list[_Call] = []
        later: list[_Call] = []
        seen: set[Hashable] = set()
        while self._queue and len(batch) < self.max_batch:
            call = self._queue.popleft()
            if call.key in self._busy or call.key in seen:
                later.append(call)  # behind a call of its key: it keeps its place
            else:
                batch.append(call)
            seen.add(call.key)
        self._queue.extendleft(reversed(later))
        self._busy.update(c.key for c in batch)
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    # -- kept connections -----------------------------------------------------------------

    async def _keep(self, conn: asyncpg.Connection) -> None:
        """Keep ``conn`` for the next batch, or give it back to the pool when the pool has
        none idle (someone else may be waiting for one) or the database is closing."""
        pool = self.db.pool
        now = time.monotonic()
        if now - self._looked_at >= _LOOK_EVERY:  # the pool's counts walk every holder
            self._looked_at = now
            self._crowded = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
        if self._closing or self._crowded or conn.is_closed() or conn.is_in_transaction():
            await pool.release(conn)
            return
        self._kept.append(conn)
        self._last_batch = now
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.keep_for, self._reap)

    def _reap(self) -> None:
        """Give the kept connections back once no batch ran for ``keep_for`` seconds."""
        self._reaper = None
        if not self._kept:
            return
        idle_for = time.monotonic() - self._last_batch
        if idle_for < self.keep_for:
            loop = asyncio.get_running_loop()
            self._reaper = loop.call_later(self.keep_for - idle_for, self._reap)
            return
        task = asyncio.create_task(self._release_kept())
        self._running.add(task)  # referenced until done, like a batch
        task.add_done_callback(self._running.discard)

    async def _release_kept(self) -> None:
        kept, self._kept = self._kept, []
        for conn in kept:
            await self.db.pool.release(conn)

    async def give_back(self) -> None:
        """The database is closing: every kept connection back to the pool, and every
        batch from now on gives its connection back when done."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await self._release_kept()

    async def _run(self, batch: list[_Call]) -> None:
        batch.sort(key=lambda c: c.key)  # one lock order for every batch of every node
        self.batches += 1
        self.calls += len(batch)
        try:
            t0 = time.perf_counter()
            for call in batch:
                self.observe("batch_wait", t0 - call.queued_at)
            conn = self._kept.pop() if self._kept else await self.db.pool.acquire()
            t1 = time.perf_counter()
            self.observe("pool_acquire", t1 - t0)
            ran = False
            try:
                if len(batch) == 1:
                    rows = [await conn.fetchrow(self.query, *batch[0].args)]
                else:
                    rows = await conn.fetchmany(self.query, [c.args for c in batch])
                ran = True
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                if len(batch) == 1:
                    raise
                await self._one_by_one(conn, batch)
                return
            finally:
                self.observe("statement", time.perf_counter() - t1)
                # Kept only after a clean run; after an error or a cancel mid-statement,
                # back to the pool, which knows how to clean a connection up.
                await (self._keep(conn) if ran else self.db.pool.release(conn))
            for call, row in zip(batch, rows, strict=True):
                if not call.result.done():
                    call.result.set_result(row)
        except BaseException as e:
            for call in batch:
                if not call.result.done():
                    call.result.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._busy.difference_update(c.key for c in batch)

    async def _one_by_one(self, conn: asyncpg.Connection, batch: list[_Call]) -> None:
        """After a failed batch (rolled back whole): each call alone, with its own result."""
        for call in batch:
            try:
                row = await conn.fetchrow(self.query, *call.args)
            except Exception as e:
                if not call.result.done():
                    call.result.set_exception(e)
            else:
                if not call.result.done():
                    call.result.set_result(row)
