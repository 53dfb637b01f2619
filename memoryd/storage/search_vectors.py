"""pgvector as the vector store: one table in the same database, HNSW with cosine.

The table is made at start-up (its dimension comes from the embedder), only where the
``vector`` extension exists: migrations stay valid on a PostgreSQL without pgvector.
Rows go with their message or memory (foreign keys, ON DELETE CASCADE), and every query
is scoped by ``user_id``.

Only the vectors of large users are in the HNSW graph (``in_graph``, a partial index). A
user with up to ``exact_below`` vectors is searched exactly, which beats walking a graph
shared with everyone else, so putting their vectors in it bought nothing and cost each
live message about 1,000 buffer visits in PostgreSQL (docs/benchmarks.md). A user found
larger at query time is moved into the graph in the background; until every row is in,
the rows still outside are searched exactly next to the graph's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from uuid import UUID

import asyncpg

from memoryd.bridges.vectors import VectorItem, VectorMatch
from memoryd.storage.database import Database, pack_vector

EXACT_BELOW = 20_000  # a user's vectors: up to this many, searched exactly
_PROMOTE_BATCH = 500  # rows moved into the graph per statement (each an HNSW insert)

log = logging.getLogger("memoryd.search")

_HNSW = """CREATE INDEX IF NOT EXISTS idx_search_vectors_hnsw ON search_vectors
           USING hnsw (embedding vector_cosine_ops) WHERE in_graph"""


async def pgvector_available(db: Database) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))


class PgVectorStore:
    name = "pgvector"

    def __init__(
        self, db: Database, *, ef_search: int = 100, exact_below: int = EXACT_BELOW
    ) -> None:
        self.db = db
        self.ef_search = ef_search
        self.exact_below = exact_below
        self._iterative = False
        self._few_cache: dict[UUID, tuple[bool, float]] = {}
        self._promoting: dict[UUID, asyncio.Task[None]] = {}

    async def prepare(self, dimension: int) -> int | None:
        """Create the table and its indexes for ``dimension``; the existing dimension."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('search_vectors', 0))"
            )
            existing = await conn.fetchval(
                """SELECT atttypmod FROM pg_attribute
                   WHERE attrelid = to_regclass('search_vectors') AND attname = 'embedding'"""
            )
            if existing is None:
                await conn.execute(
                    f"""CREATE TABLE search_vectors (
                        doc_id TEXT PRIMARY KEY,
                        user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                        memory_id UUID NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
                        message_id UUID REFERENCES messages(id) ON DELETE CASCADE,
                        model TEXT NOT NULL,
                        embedding vector({int(dimension)}) NOT NULL,
                        in_graph BOOLEAN NOT NULL DEFAULT FALSE,
                        updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
                )
                await conn.execute(_HNSW)
                await conn.execute(
                    "CREATE INDEX idx_search_vectors_user ON search_vectors (user_id, in_graph)"
                )
                await conn.execute(
                    "CREATE INDEX idx_search_vectors_memory ON search_vectors (memory_id)"
                )
                await conn.execute(
                    "CREATE INDEX idx_search_vectors_message ON search_vectors (message_id)"
                )
            else:
                await _graph_of_large_users_only(conn, self.exact_below)
            version = await conn.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            )
        major, minor = (int(p) for p in str(version).split(".")[:2])
        self._iterative = (major, minor) >= (0, 8)  # filtered HNSW scans that keep going
        return None if existing is None else int(existing)

    async def upsert(self, user_id: UUID, items: Sequence[VectorItem], model: str) -> None:
        await self.upsert_many({user_id: items}, model)

    async def upsert_many(self, items: Mapping[UUID, Sequence[VectorItem]], model: str) -> None:
        rows = [(user_id, i) for user_id, mine in items.items() for i in mine]
        if not rows:
            return
        try:
            # Each vector packed once in pgvector's binary form (`pack_vector`, the
            # pool's codec): no text formatting or per-float encoding.
            await self.db.execute(
                # In the graph when its user's vectors are (any one of them is).
                """INSERT INTO search_vectors (doc_id, user_id, memory_id, message_id, model,
                       embedding, in_graph)
                   SELECT d.doc_id, d.user_id, d.memory_id, d.message_id, $1, d.embedding,
                          EXISTS (SELECT 1 FROM search_vectors g
                                  WHERE g.user_id = d.user_id AND g.in_graph)
                   FROM unnest($2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::vector[])
                        AS d(doc_id, user_id, memory_id, message_id, embedding)
                   ON CONFLICT (doc_id) DO UPDATE SET embedding = EXCLUDED.embedding,
                       model = EXCLUDED.model, updated_at = now(),
                       in_graph = search_vectors.in_graph OR EXCLUDED.in_graph
                   WHERE search_vectors.user_id = EXCLUDED.user_id""",
                model, [i.doc_id for _, i in rows], [u for u, _ in rows],
                [i.memory_id for _, i in rows], [i.message_id for _, i in rows],
                [pack_vector(i.vector) for _, i in rows],
            )  # fmt: skip
        except asyncpg.ForeignKeyViolationError:
            if len(rows) == 1:
                return  # deleted while it was being embedded: nothing to store
            for user_id, item in rows:  # store the others
                await self.upsert_many({user_id: [item]}, model)

    async def delete(self, user_id: UUID, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            await self.db.execute(
                "DELETE FROM search_vectors WHERE user_id = $1 AND doc_id = ANY($2::text[])",
                user_id,
                list(doc_ids),
            )

    async def query(self, user_id: UUID, vector: Sequence[float], limit: int) -> list[VectorMatch]:
        async with self.db.transaction() as conn:
            # A plan for this user's size, never the statement's cached generic plan: one
            # made for a small user (an exact scan) costs seconds for a large one.
            settings = ["plan_cache_mode = force_custom_plan"]
            few = await self._few(conn, user_id)
            if few:
                # A user with few vectors: the exact distance to each of them beats any
                # graph walk (and is exact); their vectors are not in the graph at all.
                settings.append("enable_indexscan = off")
            else:
                # The graph's branch walks the HNSW index and the other one the user's
                # index, whatever the statistics of `in_graph` say. Right after a user
                # moved in they are stale: sorting the user's 100k rows through their
                # btree looked cheaper than HNSW (200 ms a query), and a sequential scan
                # for the rows outside the graph (there are none). Every other plan of
                # either branch sorts anyway.
                settings.append("enable_sort = off")
                settings.append("enable_seqscan = off")
                settings.append(f"hnsw.ef_search = {max(int(limit), self.ef_search)}")
                if self._iterative:
                    settings.append("hnsw.iterative_scan = relaxed_order")
            await conn.execute("; ".join(f"SET LOCAL {s}" for s in settings))
            if few:
                rows = await conn.fetch(_NEAREST.format(where="TRUE"),
                                        user_id, pack_vector(vector), limit)  # fmt: skip
            else:
                # The graph's nearest, and the nearest of the rows not in it yet (none
                # once the user is moved in: an index probe), best first.
                rows = await conn.fetch(
                    f"""SELECT * FROM ({_NEAREST.format(where="in_graph")}) graph
                        UNION ALL
                        SELECT * FROM ({_NEAREST.format(where="NOT in_graph")}) outside
                        ORDER BY score DESC LIMIT $3""",
                    user_id, pack_vector(vector), limit,
                )  # fmt: skip
                if any(r["outside"] for r in rows):
                    self._promote(user_id)
        return [VectorMatch(r["doc_id"], r["memory_id"], r["message_id"], float(r["score"]))
                for r in rows]  # fmt: skip

    def _promote(self, user_id: UUID) -> None:
        """Move a large user's vectors into the graph, in the background; any node's next
        query of that user starts it again if this one is cut short."""
        if user_id in self._promoting:
            return
        task = asyncio.create_task(self._move_into_graph(user_id), name="memoryd-hnsw-promote")
        self._promoting[user_id] = task
        task.add_done_callback(lambda _: self._promoting.pop(user_id, None))

    async def _move_into_graph(self, user_id: UUID) -> None:
        moved = 0
        try:
            while True:
                status = await self.db.execute(
                    """UPDATE search_vectors SET in_graph = TRUE WHERE ctid = ANY(ARRAY(
                           SELECT ctid FROM search_vectors WHERE user_id = $1 AND NOT in_graph
                           LIMIT $2 FOR UPDATE SKIP LOCKED))""",
                    user_id,
                    _PROMOTE_BATCH,
                )
                count = int(status.split()[-1])
                moved += count
                if count == 0:
                    break
        except Exception:
            log.warning("moving a user's vectors into the graph stopped", exc_info=True)
        if moved:
            log.info("moved %d vectors of a large user into the HNSW graph", moved)

    async def _few(self, conn: asyncpg.Connection, user_id: UUID) -> bool:
        """Whether the user has at most ``exact_below`` vectors; counted by the user index (a
        sequential scan of a user with half the table costs more than the search) and
        remembered for a minute."""
        now = time.monotonic()
        cached = self._few_cache.get(user_id)
        if cached is not None and now - cached[1] < 60.0:
            return cached[0]
        await conn.execute("SET LOCAL enable_seqscan = off")
        few = bool(
            await conn.fetchval(
                """SELECT count(*) <= $2 FROM (
                       SELECT 1 FROM search_vectors WHERE user_id = $1 LIMIT $2 + 1) s""",
                user_id,
                self.exact_below,
            )
        )
        await conn.execute("SET LOCAL enable_seqscan = on")
        if len(self._few_cache) > 100_000:
            self._few_cache.clear()
        self._few_cache[user_id] = (few, now)
        return few

    async def drop_index(self) -> None:
        """Bulk loads: one HNSW build is many times faster than one insert at a time."""
        await self.db.execute("DROP INDEX IF EXISTS idx_search_vectors_hnsw")

    async def build_index(self) -> None:
        """After a bulk load: the large users' vectors into the graph, then one build."""
        async with self.db.pool.acquire() as conn:
            await _mark_large_users(conn, self.exact_below)
            # The marked rows' old versions go before the build, and the planner learns
            # how many rows are in the graph now.
            await conn.execute("VACUUM (ANALYZE) search_vectors", timeout=3600)
            await conn.execute("SET maintenance_work_mem = '512MB'")
            # Minutes for millions of vectors, past the pool's timeout.
            await conn.execute(_HNSW, timeout=3600)
            await conn.execute("RESET maintenance_work_mem")

    async def count(self, user_id: UUID) -> int:
        return int(
            await self.db.fetchval(
                "SELECT count(*) FROM search_vectors WHERE user_id = $1", user_id
            )
        )

    async def aclose(self) -> None:
        for task in list(self._promoting.values()):
            task.cancel()
        await asyncio.gather(*self._promoting.values(), return_exceptions=True)


# The nearest of a user's vectors among those ``where`` says ($1 user, $2 vector, $3 k).
_NEAREST = """SELECT doc_id, memory_id, message_id, 1 - (embedding <=> $2::vector) AS score,
                     NOT in_graph AS outside
              FROM search_vectors WHERE user_id = $1 AND {where}
              ORDER BY embedding <=> $2::vector LIMIT $3"""


async def _mark_large_users(conn: asyncpg.Connection, exact_below: int) -> None:
    """Put every vector of each user with more than ``exact_below`` into the graph (with
    the HNSW index dropped: no insert into it one at a time)."""
    await conn.execute(
        """UPDATE search_vectors SET in_graph = TRUE
           WHERE NOT in_graph AND user_id IN (
               SELECT user_id FROM search_vectors GROUP BY user_id HAVING count(*) > $1)""",
        exact_below,
        timeout=3600,
    )


async def _graph_of_large_users_only(conn: asyncpg.Connection, exact_below: int) -> None:
    """Upgrade a table made before ``in_graph``: every vector was in the graph. Its index
    is dropped (no row moves through it one at a time), the large users are marked, and
    the partial index is built once (minutes for millions of vectors, at one start-up)."""
    exists = await conn.fetchval(
        """SELECT 1 FROM pg_attribute
           WHERE attrelid = 'search_vectors'::regclass AND attname = 'in_graph'"""
    )
    if exists:
        return
    log.warning("search_vectors: keeping only large users' vectors in the HNSW graph")
    await conn.execute("DROP INDEX IF EXISTS idx_search_vectors_hnsw")
    await conn.execute(
        "ALTER TABLE search_vectors ADD COLUMN in_graph BOOLEAN NOT NULL DEFAULT FALSE"
    )
    await conn.execute("DROP INDEX IF EXISTS idx_search_vectors_user")
    await conn.execute(
        "CREATE INDEX idx_search_vectors_user ON search_vectors (user_id, in_graph)", timeout=3600
    )
    await _mark_large_users(conn, exact_below)
    await conn.execute("ANALYZE search_vectors", timeout=3600)
    await conn.execute(_HNSW, timeout=3600)
