"""pgvector's HNSW graph holds only large users' vectors: a small user is searched
exactly (no graph insert per live message), a user found large is moved into the graph
in the background and searched right meanwhile, and a table from before is upgraded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest
import pytest_asyncio

from memoryd.bridges.vectors import VectorItem
from memoryd.storage.database import Database
from memoryd.storage.search_vectors import PgVectorStore

pytestmark = pytest.mark.storage

DIM = 8


@pytest_asyncio.fixture
async def db(own_database: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_database, min_size=1, max_size=4)
    if not await database.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'"):
        await database.close()
        pytest.skip("this PostgreSQL has no pgvector")
    await database.execute("DROP TABLE IF EXISTS search_vectors")
    yield database
    await database.close()


def basis(i: int) -> list[float]:
    return [1.0 if j == i else 0.01 for j in range(DIM)]


async def owner(db: Database) -> tuple[UUID, UUID]:
    user = await db.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", f"{uuid4()}@x")
    memory = await db.fetchval("INSERT INTO memories (user_id) VALUES ($1) RETURNING id", user)
    return user, memory


async def items(db: Database, store: PgVectorStore, name: str, n: int) -> UUID:
    user, memory = await owner(db)
    await store.upsert(
        user, [VectorItem(f"t:{name}{i}", memory, None, basis(i)) for i in range(n)], "test"
    )
    return user


async def in_graph(db: Database, user: UUID) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM search_vectors WHERE user_id = $1 AND in_graph", user
        )
    )


async def test_a_user_found_large_is_moved_into_the_graph(db: Database) -> None:
    store = PgVectorStore(db, exact_below=5)
    assert await store.prepare(DIM) is None
    index = await db.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_search_vectors_hnsw'"
    )
    assert "hnsw" in index and "WHERE in_graph" in index
    big, small = await items(db, store, "big", 8), await items(db, store, "small", 3)
    assert await in_graph(db, big) == 0 and await in_graph(db, small) == 0

    # Large, and nothing in the graph yet: the answer comes from the rows outside it.
    assert (await store.query(big, basis(2), 2))[0].doc_id == "t:big2"
    for _ in range(500):  # the move, in the background: up to 10 s
        if await in_graph(db, big) == 8:
            break
        await asyncio.sleep(0.02)
    assert await in_graph(db, big) == 8
    hits = await store.query(big, basis(5), 3)
    assert hits[0].doc_id == "t:big5" and len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # A large user's new vectors join the graph as they are stored; a small one's never.
    user_memory = await db.fetchval("SELECT memory_id FROM search_vectors WHERE user_id = $1", big)
    await store.upsert(big, [VectorItem("t:big-new", user_memory, None, basis(7))], "test")
    assert await in_graph(db, big) == 9
    assert [h.doc_id for h in await store.query(small, basis(1), 1)] == ["t:small1"]
    assert await in_graph(db, small) == 0
    await store.aclose()


async def test_a_table_from_before_keeps_only_large_users_in_its_graph(db: Database) -> None:
    await db.execute(
        f"""CREATE TABLE search_vectors (
            doc_id TEXT PRIMARY KEY,
            user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            memory_id UUID NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            message_id UUID REFERENCES messages(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            embedding vector({DIM}) NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
        CREATE INDEX idx_search_vectors_hnsw ON search_vectors
            USING hnsw (embedding vector_cosine_ops);
        CREATE INDEX idx_search_vectors_user ON search_vectors (user_id)"""
    )
    rows = []
    for name, n in (("big", 6), ("small", 2)):
        user, memory = await owner(db)
        rows += [(f"t:{name}{i}", user, memory, str(basis(i))) for i in range(n)]
    await db.pool.executemany(
        """INSERT INTO search_vectors (doc_id, user_id, memory_id, model, embedding)
           VALUES ($1, $2, $3, 'test', $4::text::vector)""",
        rows,
    )
    store = PgVectorStore(db, exact_below=4)
    assert await store.prepare(DIM) == DIM
    big, small = rows[0][1], rows[-1][1]
    assert (await in_graph(db, big), await in_graph(db, small)) == (6, 0)
    index = await db.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_search_vectors_hnsw'"
    )
    assert "WHERE in_graph" in index
    assert [h.doc_id for h in await store.query(big, basis(3), 1)] == ["t:big3"]
    assert [h.doc_id for h in await store.query(small, basis(1), 1)] == ["t:small1"]
