"""The durable ``search.embed`` job: one per user, fed by the triggers of migration 0005.

A write queues its document (``search_embed_queue``) and sets the user's job pending in
its own transaction. The job embeds the queue in batches, upserts or deletes the vectors,
and removes what it did; a failure retries with backoff and resumes from the queue. It
finishes only if no write queued more meanwhile (the job's ``gen``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from memoryd.bridges.vectors import VectorItem
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import RetryLater
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.storage.jobs import Job
from memoryd.storage.store import Storage

EMBED = "search.embed"
BULK_ABOVE = 20_000  # documents: a full reindex past this rebuilds the HNSW index once
_MAX_ROUNDS = 50  # then let other jobs run; the job comes back at once


async def embed_queued(
    storage: Storage, runtime: SearchRuntime, user_id: UUID, *,
    progress: Callable[[int], None] | None = None, stop_after: int | None = None,
) -> int:  # fmt: skip
    """Embed the queued documents of the user (all, or about ``stop_after``); the count."""
    embedder, vectors = runtime.embedder, runtime.vectors
    assert embedder is not None and vectors is not None
    store = storage.search
    done = 0
    while stop_after is None or done < stop_after:
        batch = embedder.batch_size if stop_after is None else min(embedder.batch_size,
                                                                    stop_after - done)  # fmt: skip
        docs = await store.queued(user_id, batch)
        if not docs:
            break
        live = [d for d in docs if d.text and d.memory_id is not None]
        gone = [d.doc_id for d in docs if not (d.text and d.memory_id is not None)]
        if gone:
            await vectors.delete(user_id, gone)
        if live:
            embeddings = await embedder.embed([d.text or "" for d in live])
            items = [VectorItem(d.doc_id, d.memory_id, d.message_id, v)  # type: ignore[arg-type]
                     for d, v in zip(live, embeddings, strict=True)]  # fmt: skip
            await vectors.upsert(user_id, items, embedder.model)
        await store.dequeue(docs)
        done += len(docs)
        if progress is not None:
            progress(len(docs))
    return done


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
