"""The durable ``search.embed`` job: one per user, fed by the triggers of migration 0005.

A write queues its document (``search_embed_queue``) and sets the user's job pending in
its own transaction. The job embeds the queue in batches, upserts or deletes the vectors,
and removes what it did; a failure retries with backoff and resumes from the queue. It
finishes only if no write queued more meanwhile (the job's ``gen``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from memoryd.bridges.vectors import VectorItem
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import RetryLater
from memoryd.storage.jobs import Job

EMBED = "search.embed"
_MAX_ROUNDS = 50  # then let other jobs run; the job comes back at once


async def embed_queued(
    svc: Services, user_id: UUID, *, progress: Callable[[int], None] | None = None
) -> int:
    """Embed every queued document of the user; the number done."""
    runtime = svc.search
    embedder, vectors = runtime.embedder, runtime.vectors
    assert embedder is not None and vectors is not None
    store = svc.store.search
    done = 0
    while docs := await store.queued(user_id, embedder.batch_size):
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
            total += await embed_queued(svc, job.user_id)
            if await svc.store.search.finish_embed_job(job.id, job.leased_by, gen):
                return {"embedded": total}
            gen = await svc.store.search.embed_gen(job.id)
        raise RetryLater("more was queued while embedding", delay=0.0)

    return run
