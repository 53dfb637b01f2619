"""The embedding sweep: one batch embeds the queued documents of many users (one
embedder call, one vector upsert), and a failed sweep leaves every document queued and
free for the next one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import pytest_asyncio

from memoryd.config import Settings
from memoryd.handlers.search_jobs import EmbedSweeper, embed_sweep
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.server.search import close_search, open_search
from memoryd.storage.database import Database
from memoryd.storage.messages import NewMessage
from memoryd.storage.search import EmbedDoc
from memoryd.storage.store import Storage

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def storage(own_database: str) -> AsyncIterator[Storage]:
    db = await Database.connect(own_database, min_size=1, max_size=4)
    yield Storage(db)
    await db.close()


@pytest_asyncio.fixture(scope="module")
async def runtime(own_database: str, storage: Storage) -> AsyncIterator[SearchRuntime]:
    found = await open_search(Settings(database_url=own_database), storage)
    if not found.semantic:
        pytest.skip("this PostgreSQL has no pgvector")
    yield found
    await close_search(found)


class CountingEmbedder:
    """The real embedder, counting its calls; or failing, like a provider that is down."""

    def __init__(self, inner: object, fail: bool = False) -> None:
        self.inner, self.fail, self.calls = inner, fail, 0
        self.model = inner.model  # type: ignore[attr-defined]
        self.batch_size = 256

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("the provider is down")
        return await self.inner.embed(texts)  # type: ignore[attr-defined, no-any-return]


async def _user_with_messages(storage: Storage, n: int) -> uuid.UUID:
    user = await storage.users.create(
        email=f"sweep-{uuid.uuid4().hex[:8]}@example.com", password_hash=None,
        first_name=None, last_name=None,
    )  # fmt: skip
    memory, _ = await storage.memories.create(user.id, {"title": "sweep"})
    for i in range(n):
        await storage.messages.create(user.id, memory.id, NewMessage(f"walked the dog {i}"))
    return user.id


async def _queued(storage: Storage, user_id: uuid.UUID) -> int:
    return int(await storage.db.fetchval(
        "SELECT count(*) FROM search_embed_queue WHERE user_id = $1 AND leased_until IS NULL",
        user_id,
    ))  # fmt: skip


async def test_one_sweep_embeds_many_users_and_a_failed_one_keeps_the_queue(
    storage: Storage, runtime: SearchRuntime
) -> None:
    while await embed_sweep(storage, runtime, lease_seconds=30):
        pass  # what other tests of this module left
    users = [await _user_with_messages(storage, 3) for _ in range(3)]
    assert [await _queued(storage, u) for u in users] == [4, 4, 4]  # the memory and 3 messages

    failing = CountingEmbedder(runtime.embedder, fail=True)
    down = SearchRuntime(embedder=failing, vectors=runtime.vectors)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await embed_sweep(storage, down, lease_seconds=30)
    assert failing.calls == 1
    assert [await _queued(storage, u) for u in users] == [4, 4, 4]  # released, not lost

    counting = CountingEmbedder(runtime.embedder)
    up = SearchRuntime(embedder=counting, vectors=runtime.vectors)  # type: ignore[arg-type]
    assert await embed_sweep(storage, up, lease_seconds=30) == 12
    assert counting.calls == 1  # every user's documents in one call
    for u in users:
        assert await _queued(storage, u) == 0
        stored = await storage.db.fetchval(
            "SELECT count(*) FROM search_vectors WHERE user_id = $1", u
        )
        assert stored == 4


async def test_the_sweeper_follows_a_burst_batch_after_batch_and_stops_at_a_short_one(
    storage: Storage, runtime: SearchRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    while await embed_sweep(storage, runtime, lease_seconds=30):
        pass
    user = await _user_with_messages(storage, 11)  # 12 documents: batches of 5, 5 and 2
    counting = CountingEmbedder(runtime.embedder)
    counting.batch_size = 5
    up = SearchRuntime(embedder=counting, vectors=runtime.vectors)  # type: ignore[arg-type]
    leases: list[int] = []
    lease = storage.search.lease_queued

    async def counted_lease(limit: int, lease_seconds: float) -> list[EmbedDoc]:
        docs = await lease(limit, lease_seconds)
        leases.append(len(docs))
        return docs

    monkeypatch.setattr(storage.search, "lease_queued", counted_lease)
    # No timed sweep in this test: only a wake starts one.
    sweeper = EmbedSweeper(storage, up, interval=3600, linger=0)
    sweeper.start()
    try:
        sweeper.wake()
        await _until(lambda: _in_queue(storage, user), 0)
        assert leases == [5, 5, 2]  # and no empty lease after the short batch
        assert counting.calls == 3

        memory, _ = await storage.memories.create(user, {"title": "later"})
        await storage.messages.create(user, memory.id, NewMessage("fed the cat"))
        sweeper.wake()  # a write on this node wakes it: both documents, one batch
        await _until(lambda: _in_queue(storage, user), 0)
        assert leases == [5, 5, 2, 2] and counting.calls == 4
    finally:
        await sweeper.stop()


async def _in_queue(storage: Storage, user_id: uuid.UUID) -> int:
    """Queued or leased: not embedded yet."""
    return int(await storage.db.fetchval(
        "SELECT count(*) FROM search_embed_queue WHERE user_id = $1", user_id
    ))  # fmt: skip


async def _until(read: Callable[[], Awaitable[int]], want: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await read()) != want:
        assert asyncio.get_running_loop().time() < deadline, f"still {got}, not {want}"
        await asyncio.sleep(0.02)


async def test_a_wake_that_lands_with_stop_still_stops_the_sweeper(
    storage: Storage, runtime: SearchRuntime
) -> None:
    # Python 3.11's wait_for returned normally when its wait ended and its task was
    # cancelled in one loop step, and the sweeper went on: an app shutdown hung on it.
    sweeper = EmbedSweeper(storage, runtime, interval=3600, linger=0)
    sweeper.start()
    await asyncio.sleep(0.05)  # parked, waiting for a wake
    sweeper.wake()
    async with asyncio.timeout(5):
        await sweeper.stop()
