"""The embedding sweep: one batch embeds the queued documents of many users (one
embedder call, one vector upsert), and a failed sweep leaves every document queued and
free for the next one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio

from memoryd.config import Settings
from memoryd.handlers.search_jobs import embed_sweep
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.server.search import close_search, open_search
from memoryd.storage.database import Database
from memoryd.storage.messages import NewMessage
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
