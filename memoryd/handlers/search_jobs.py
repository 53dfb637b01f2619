"""Embedding the queue the triggers fill (``search_embed_queue``, migrations 0005, 0009).

A write queues its document in its own transaction. Each node with an embedder runs an
`EmbedSweeper`: woken by its own writes (and every ``interval`` for other nodes'), it
leases the oldest queued documents of any users, embeds them in one batch, upserts or
deletes their vectors, and removes what it did; a failure leaves them queued, and the
sweep backs off and tries again. So a busy server embeds many
users' messages per round trip instead of running a job per message.

``memoryd reindex`` drains the queue one user at a time (`embed_queued`). The per-user
``search.embed`` job of migration 0005 is still run for jobs queued before 0009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from memoryd.aio import wait_event
from memoryd.bridges.vectors import VectorItem
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import RetryLater
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.storage.jobs import Job
from memoryd.storage.search import EmbedDoc
from memoryd.storage.store import Storage

log = logging.getLogger("memoryd.search")

EMBED = "search.embed"
BULK_ABOVE = 20_000  # documents: a full reindex past this rebuilds the HNSW index once
_MAX_ROUNDS = 50  # then let other jobs run; the job comes back at once


async def embed_queued(
    storage: Storage, runtime: SearchRuntime, user_id: UUID, *,
    progress: Callable[[int], None] | None = None, stop_after: int | None = None,
) -> int:  # fmt: skip
    """Embed the queued documents of the user (all, or about ``stop_after``); the count."""
    embedder = runtime.embedder
    assert embedder is not None
    store = storage.search
    done = 0
    while stop_after is None or done < stop_after:
        batch = embedder.batch_size if stop_after is None else min(embedder.batch_size,
                                                                    stop_after - done)  # fmt: skip
        docs = await store.queued(user_id, batch)
        if not docs:
            break
        await _store_vectors(runtime, docs)
        await store.dequeue(docs)
        done += len(docs)
        if progress is not None:
            progress(len(docs))
    return done


async def embed_sweep(storage: Storage, runtime: SearchRuntime, *, lease_seconds: float) -> int:
    """One sweep: the oldest queued documents of any users, embedded and stored in one
    batch, then dequeued; the count (0: the queue had nothing free)."""
    embedder = runtime.embedder
    assert embedder is not None
    store = storage.search
    docs = await store.lease_queued(embedder.batch_size, lease_seconds)
    if not docs:
        return 0
    try:
        await _store_vectors(runtime, docs)
    except Exception:
        # Back in the queue at once (not when the lease ends), for the next try.
        with contextlib.suppress(Exception):  # the database is down too: the lease ends
            await store.release(docs)
        raise
    await store.dequeue(docs)
    return len(docs)


async def _store_vectors(runtime: SearchRuntime, docs: list[EmbedDoc]) -> None:
    """Embed the documents that still have a text (one call, whoever's they are) and
    store their vectors; delete the vectors of the gone ones."""
    embedder, vectors = runtime.embedder, runtime.vectors
    assert embedder is not None and vectors is not None
    live: list[tuple[EmbedDoc, str, UUID]] = []
    gone: dict[UUID, list[str]] = {}
    for d in docs:
        if d.text and d.memory_id is not None:
            live.append((d, d.text, d.memory_id))
        else:
            gone.setdefault(d.user_id, []).append(d.doc_id)
    for user_id, doc_ids in gone.items():
        await vectors.delete(user_id, doc_ids)
    if live:
        embeddings = await embedder.embed([text for _, text, _ in live])
        items: dict[UUID, list[VectorItem]] = {}
        for (d, _, memory_id), v in zip(live, embeddings, strict=True):
            items.setdefault(d.user_id, []).append(VectorItem(d.doc_id, memory_id, d.message_id, v))
        await vectors.upsert_many(items, embedder.model)


class EmbedSweeper:
    """A node's sweeps of the embedding queue, one at a time.

    `wake` (a write on this node queued a document) starts a sweep after ``linger``
    seconds, so that a burst of sends is embedded in one batch; without a wake a sweep
    runs every ``interval`` (other nodes' writes, leases that ran out). A sweep repeats
    at once while it finds a full batch. A failure (the embedder is down) backs off,
    doubling up to ``max_backoff``; the documents it had stay queued.
    """

    def __init__(
        self, storage: Storage, runtime: SearchRuntime, *, interval: float = 1.0,
        linger: float = 0.02, lease_seconds: float = 30.0, max_backoff: float = 30.0,
    ) -> None:  # fmt: skip
        self.storage, self.runtime = storage, runtime
        self.interval, self.linger = interval, linger
        self.lease_seconds, self.max_backoff = lease_seconds, max_backoff
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._woken.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memoryd-embed-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        embedder = self.runtime.embedder
        assert embedder is not None
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            elif await wait_event(self._woken, self.interval):
                await asyncio.sleep(self.linger)
            self._woken.clear()
            try:
                # Again at once only after a full batch: a short one emptied the queue of
                # what was free, and writes since have woken the sweeper (an empty lease
                # per round was a statement for nothing).
                while await embed_sweep(self.storage, self.runtime,
                                        lease_seconds=self.lease_seconds
                                        ) >= embedder.batch_size:  # fmt: skip
                    pass
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception:
                backoff = min(self.max_backoff, max(0.25, backoff * 2))
                log.warning("embedding sweep failed; retrying in %.2f s", backoff, exc_info=True)


def job_handler(svc: Services) -> Callable[[Job], Awaitable[Any]]:
    async def run(job: Job) -> Any:
        assert job.user_id is not None and job.leased_by is not None
        gen = int((job.payload or {}).get("gen", 0))
        total = 0
        for _ in range(_MAX_ROUNDS):
            total += await embed_queued(svc.store, svc.search, job.user_id)
            if await svc.store.search.finish_embed_job(job.id, job.leased_by, gen):
                return {"embedded": total}
            gen = await svc.store.search.embed_gen(job.id)
        raise RetryLater("more was queued while embedding", delay=0.0)

    return run


@dataclass(frozen=True)
class Reindex:
    total: int  # documents in the run
    remaining: int  # still queued when this call began
    resumed: bool
    done: int  # embedded by this call
    finished: bool


async def reindex(
    storage: Storage, runtime: SearchRuntime, user_id: UUID | None, *,
    progress: Callable[[int, int, int], None] | None = None,
    restart: bool = False, stop_after: int | None = None,
) -> Reindex:  # fmt: skip
    """Rebuild the embeddings of one user (or everyone): queue every document once per
    run, then embed the queue. An interrupted run (Ctrl-C, a crash, ``stop_after``) keeps
    its queue, and the next call resumes it instead of starting over. ``progress`` gets
    (done so far in the run, total, just done)."""
    store = storage.search
    if restart:
        await store.close_unfinished_reindex(user_id)
    run_id, total, resumed = await store.open_reindex(user_id)
    queued = await store.queued_users(user_id)
    remaining = sum(n for _, n in queued)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(total, total - remaining + done), total, n)

    if progress is not None:
        progress(max(0, total - remaining), total, 0)
    # Everyone's vectors: one HNSW build at the end beats an index insert per vector.
    bulk = user_id is None and remaining > BULK_ABOVE and hasattr(runtime.vectors, "drop_index")
    if bulk:
        await runtime.vectors.drop_index()  # type: ignore[union-attr]
    try:
        for owner, _ in queued:
            left = None if stop_after is None else stop_after - done
            if left is not None and left <= 0:
                break
            await embed_queued(storage, runtime, owner, progress=step, stop_after=left)
    finally:
        if bulk:
            await runtime.vectors.build_index()  # type: ignore[union-attr]
    finished = not await store.queued_users(user_id)
    if finished:
        await store.close_reindex(run_id)
    return Reindex(total, remaining, resumed, done, finished)
