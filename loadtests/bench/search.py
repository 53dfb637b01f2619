"""Search benchmark: query latency per mode for one user with 10k and with 100k messages,
among ``total`` messages spread over many users; indexing throughput.

The corpus is synthetic chat: words drawn from a Zipf-like vocabulary, 4-20 words a
message. It is bulk-loaded as a restore would (COPY into a staging table, one INSERT that
computes the full text vectors, then the GIN indexes), because a million sends through
the API would take hours on this machine; the indexing throughput is measured apart,
through the real paths: sends with the triggers on (text), and the ``search.embed`` job's
code (embedding with the local embedder, upserting into pgvector).

Queries go through the search handler in-process (``handlers.search.search``: ranking,
fusion, snippets; no HTTP), one at a time. The query's embedding time is reported apart.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loadtests.bench.common import percentiles
from memoryd.config import Settings
from memoryd.handlers.context import Caller, NoDelivery, Services
from memoryd.handlers.rbac import permissions_for
from memoryd.handlers.search import search
from memoryd.handlers.search_jobs import embed_queued
from memoryd.handlers.tokens import TokenIssuer
from memoryd.protocol.search import SearchRequest
from memoryd.server.search import close_search, open_search
from memoryd.storage.database import Database, create_database_if_missing
from memoryd.storage.migrate import migrate
from memoryd.storage.search_vectors import PgVectorStore
from memoryd.storage.store import Storage

Log = Callable[..., None]

_SYLLABLES = ("ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "pa", "ri", "to",
              "ma", "ne", "shi", "lu", "be", "go", "fa", "zu")  # fmt: skip
_COMMON = ("the", "we", "and", "to", "a", "was", "it", "at", "in", "for", "on", "my",
           "with", "is", "that", "so", "then", "our")  # fmt: skip
_REAL = ("castle", "tram", "river", "dinner", "train", "museum", "beach", "mountain",
         "coffee", "market", "garden", "birthday", "doctor", "meeting", "flight", "hotel",
         "concert", "bakery", "school", "holiday", "kitchen", "bicycle", "festival",
         "library", "harbour", "picnic", "forest", "island", "bridge", "sunset")  # fmt: skip


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set(_REAL)
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Corpus:
    def __init__(self, seed: int = 15, vocabulary: int = 5000) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng, vocabulary)
        self.rng.shuffle(self.words)
        # Zipf-like weights: the word of rank r is drawn with weight 1 / (r + 10).
        self.weights = [1.0 / (r + 10) for r in range(len(self.words))]

    def message(self) -> str:
        n = self.rng.randint(4, 20)
        picked = self.rng.choices(self.words, self.weights, k=n)
        out = []
        for w in picked:
            if self.rng.random() < 0.3:
                out.append(self.rng.choice(_COMMON))
            out.append(w)
        return " ".join(out)

    def queries(self, n: int) -> list[str]:
        """Single words of several frequencies, word pairs, a phrase, typos, prefixes."""
        out = []
        for i in range(n):
            kind = i % 5
            w = self.words[self.rng.randint(0, 1500)]
            if kind == 0:
                out.append(w)
            elif kind == 1:
                out.append(f"{w} {self.words[self.rng.randint(0, 1500)]}")
            elif kind == 2:
                out.append(f'"{w} {self.rng.choice(self.words[:200])}"')
            elif kind == 3 and len(w) > 4:  # a typo: two letters swapped
                j = self.rng.randint(1, len(w) - 2)
                out.append(w[:j] + w[j + 1] + w[j] + w[j + 2 :])
            else:
                out.append(w[: max(3, len(w) - 2)])  # a prefix
        return out


async def _users(db: Database, count: int) -> list[uuid.UUID]:
    rows = await db.fetch(
        """INSERT INTO users (email, first_name) SELECT 'search-bench-' || g || '-' || $2
               || '@example.com', 'Bench' FROM generate_series(1, $1) g RETURNING id""",
        count,
        uuid.uuid4().hex[:8],
    )
    ids = [r["id"] for r in rows]
    await db.execute("INSERT INTO user_event_heads (user_id) SELECT unnest($1::uuid[])", ids)
    return ids


_POOL = 100_000  # distinct message texts; a million are drawn from them (generating is slow)
_LONG = 3600.0  # seconds: the bulk statements outlast the pool's command timeout
_GIN = ("idx_messages_search", "idx_search_words_trgm")  # dropped for the load


class _Long:
    """A connection whose statements may run past the pool's command timeout."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self._conn.execute(sql, *args, timeout=_LONG)

    async def fetch(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetch(sql, *args, timeout=_LONG)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> Any:
        return await self._conn.copy_records_to_table(table, timeout=_LONG, **kwargs)


async def bulk_load(
    db: Database, corpus: Corpus, plan: list[tuple[uuid.UUID, int, int]], log: Log
) -> dict[str, float]:
    """Memories and messages for ``plan`` = [(user, memories, messages)], loaded in bulk."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    pool = [corpus.message() for _ in range(min(_POOL, sum(p[2] for p in plan)))]
    mem_rows: list[tuple[Any, ...]] = []
    msg_rows: list[tuple[Any, ...]] = []
    for user_id, n_mem, n_msg in plan:
        memories = [uuid.uuid4() for _ in range(n_mem)]
        for m in memories:
            mem_rows.append((m, user_id, f"{corpus.rng.choice(_REAL)} {corpus.message()[:60]}",
                             corpus.message()))  # fmt: skip
        seqs: dict[uuid.UUID, int] = {}
        for i in range(n_msg):
            m = memories[i % n_mem]
            seqs[m] = seqs.get(m, 0) + 1
            at = now - timedelta(seconds=n_msg - i)
            msg_rows.append((m, user_id, seqs[m], corpus.rng.choice(pool), at))
    generated = time.perf_counter()
    log(f"  generated {len(msg_rows)} messages in {generated - started:.1f} s")
    async with db.pool.acquire() as pooled:
        conn = _Long(pooled)
        await conn.execute("SET maintenance_work_mem = '256MB'")
        rows = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE indexname = ANY($1::text[])", list(_GIN)
        )
        gin = [r["indexdef"] for r in rows]
        for name in _GIN:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
        await conn.execute("ALTER TABLE messages DISABLE TRIGGER USER")
        await conn.execute("ALTER TABLE memories DISABLE TRIGGER USER")
        try:
            await conn.copy_records_to_table(
                "memories", records=mem_rows, columns=["id", "user_id", "title", "description"]
            )
            await conn.execute(
                """UPDATE memories SET search_text = concat_ws(' ', title, description),
                       search_tsv = setweight(to_tsvector('english', title), 'A')
                           || setweight(to_tsvector('english', description), 'B')
                   WHERE search_tsv IS NULL"""
            )
            await conn.execute(
                """CREATE UNLOGGED TABLE bench_staging (memory_id uuid, user_id uuid,
                       seq bigint, content text, created_at timestamptz)"""
            )
            await conn.copy_records_to_table("bench_staging", records=msg_rows)
            copied = time.perf_counter()
            await conn.execute(
                """INSERT INTO messages (memory_id, user_id, seq, content, created_at,
                       updated_at, search_tsv)
                   SELECT memory_id, user_id, seq, content, created_at, created_at,
                          setweight(to_tsvector('english', content), 'C')
                   FROM bench_staging"""
            )
            await conn.execute("DROP TABLE bench_staging")
            await conn.execute(
                """INSERT INTO search_words (user_id, word)
                   SELECT DISTINCT user_id, w FROM messages,
                       regexp_split_to_table(lower(content), '[^[:alnum:]]+') AS w
                   WHERE length(w) BETWEEN 3 AND 40 ON CONFLICT DO NOTHING"""
            )
            await conn.execute(
                """UPDATE memories m SET last_message_seq = s.n, message_count = s.n
                   FROM (SELECT memory_id, max(seq) AS n FROM messages GROUP BY memory_id) s
                   WHERE s.memory_id = m.id"""
            )
            inserted = time.perf_counter()
            log(f"  copied in {copied - generated:.1f} s, inserted with text vectors and "
                f"vocabularies in {inserted - copied:.1f} s")  # fmt: skip
        finally:
            await conn.execute("ALTER TABLE messages ENABLE TRIGGER USER")
            await conn.execute("ALTER TABLE memories ENABLE TRIGGER USER")
        for sql in gin:
            await conn.execute(sql)
        await conn.execute("ANALYZE messages")
        await conn.execute("ANALYZE memories")
        indexed = time.perf_counter()
        log(f"  GIN indexes (full text, vocabulary trigrams) built in {indexed - inserted:.1f} s")
    return {"generate_s": generated - started, "copy_s": copied - generated,
            "insert_s": inserted - copied, "gin_index_s": indexed - inserted}  # fmt: skip


async def _text_indexing(db: Database, storage: Storage, user_id: uuid.UUID, corpus: Corpus,
                         n: int) -> dict[str, float]:  # fmt: skip
    """Messages/s stored through MessageStore.create with the search triggers on."""
    from memoryd.storage.messages import NewMessage

    memory, _ = await storage.memories.create(user_id, {"title": "indexing"})
    texts = [corpus.message() for _ in range(n)]
    started = time.perf_counter()
    for t in texts:
        await storage.messages.create(user_id, memory.id, NewMessage(content=t))
    seconds = time.perf_counter() - started
    return {"messages": n, "seconds": seconds, "messages_per_s": n / seconds}


async def _embed_all(storage: Storage, svc: Services, user_id: uuid.UUID) -> dict[str, float]:
    """Queue and embed every document of the user through the job's code; messages/s."""
    queued = await storage.search.queue_all(user_id)
    started = time.perf_counter()
    done = await embed_queued(storage, svc.search, user_id)
    seconds = time.perf_counter() - started
    return {"documents": done, "queued": queued, "seconds": seconds,
            "documents_per_s": done / seconds if seconds else 0.0}  # fmt: skip


def _caller(user_id: uuid.UUID) -> Caller:
    return Caller(user_id=user_id, email="bench@example.com", role="user",
                  permissions=frozenset(permissions_for("user")))  # fmt: skip


async def _latencies(
    svc: Services, user_id: uuid.UUID, queries: list[str], mode: str
) -> dict[str, Any]:
    caller = _caller(user_id)
    samples: list[float] = []
    embed: list[float] = []
    hits = 0
    for q in queries:
        started = time.perf_counter()
        page = await search(svc, caller, SearchRequest(q=q, mode=mode, limit=20))
        samples.append((time.perf_counter() - started) * 1000)
        if page.query_embedding_ms is not None:
            embed.append(page.query_embedding_ms)
        hits += bool(page.results)
    out: dict[str, Any] = {"queries": len(queries), "with_results": hits,
                           "latency_ms": percentiles(samples)}  # fmt: skip
    if embed:
        out["query_embedding_ms"] = percentiles(embed)
    return out


async def run(dsn: str, tokens: TokenIssuer, *, total: int, sizes: tuple[int, int],
              queries: int, other_users: int, vectors_others: int,
              log: Log, reuse: bool = False) -> dict[str, Any]:  # fmt: skip
    """Load, index, embed and measure; every figure in one dict. With ``reuse``, a corpus
    an earlier run left in the database (of the same ``total``) is measured again, and a
    new one is left there for the next run (iterating on queries takes minutes, not ten)."""
    small, large = sizes
    db = await Database.connect(dsn, min_size=1, max_size=4)
    storage = Storage(db)
    settings = Settings(database_url=dsn)
    runtime = await open_search(settings, storage)
    try:
        svc = Services(settings=settings, store=storage, tokens=tokens, events=NoDelivery())
        svc.search = runtime
        corpus = Corpus()
        if reuse:
            loaded = await _loaded(db, total)
            if loaded is not None:
                log(f"search: reusing the {total} messages loaded before (--search-reuse)")
                big, little = loaded
                reused: dict[str, Any] = {
                    "reused": True,
                    "messages_total": int(await db.fetchval("SELECT count(*) FROM messages")),
                    "embedder": runtime.embedder.model if runtime.embedder else None,
                    "vector_store": runtime.vectors.name if runtime.vectors else None,
                }
                if runtime.semantic:
                    reused["vectors_total"] = int(
                        await db.fetchval("SELECT count(*) FROM search_vectors")
                    )
                return await _measure(svc, runtime, queries, little, big, sizes, reused, log)
        others_total = max(0, total - small - large)
        users = await _users(db, 2 + other_users)
        big, little, rest = users[0], users[1], users[2:]
        per_other = others_total // max(1, len(rest))
        plan = [(big, max(1, large // 500), large), (little, max(1, small // 200), small)]
        plan += [(u, max(1, per_other // 50), per_other) for u in rest if per_other]
        loading = large + small + per_other * len(rest)
        log(f"search: loading {loading} messages ({large} and {small} for the two measured "
            f"users, {len(rest)} other users)")  # fmt: skip
        load = await bulk_load(db, corpus, plan, log)
        result: dict[str, Any] = {
            "messages_total": int(await db.fetchval("SELECT count(*) FROM messages")),
            "users": len(users), "load": load,
            "embedder": runtime.embedder.model if runtime.embedder else None,
            "vector_store": runtime.vectors.name if runtime.vectors else None,
        }  # fmt: skip
        log("  text indexing through sends (triggers on)")
        result["text_indexing"] = await _text_indexing(db, storage, little, corpus, 500)
        if runtime.semantic:
            log("  embedding the measured users' documents (the search.embed job's code)")
            result["embedding_small"] = await _embed_all(storage, svc, little)
            log(f"    {result['embedding_small']['documents_per_s']:.0f} documents/s")
            # The rest in bulk, as a full `memoryd reindex` does: HNSW dropped, one build.
            bulk = isinstance(runtime.vectors, PgVectorStore)
            if bulk:
                await runtime.vectors.drop_index()  # type: ignore[union-attr]
            result["embedding_large"] = await _embed_all(storage, svc, big)
            log(f"    {result['embedding_large']['documents_per_s']:.0f} documents/s (bulk)")
            vectors_done = 0
            for u in rest:
                if vectors_done >= vectors_others:
                    break
                vectors_done += (await _embed_all(storage, svc, u))["documents"]
            result["vectors_of_other_users"] = vectors_done
            if bulk:
                started = time.perf_counter()
                await runtime.vectors.build_index()  # type: ignore[union-attr]
                result["hnsw_build_s"] = time.perf_counter() - started
                log(f"    HNSW index built in {result['hnsw_build_s']:.1f} s")
            result["vectors_total"] = int(await db.fetchval("SELECT count(*) FROM search_vectors"))
            await db.execute("ANALYZE search_vectors")
        if reuse:
            await db.execute("CREATE TABLE bench_search_loaded (total int, big uuid, little uuid)")
            await db.execute("INSERT INTO bench_search_loaded VALUES ($1, $2, $3)", total, big,
                             little)  # fmt: skip
        return await _measure(svc, runtime, queries, little, big, sizes, result, log)
    finally:
        await close_search(runtime)
        await db.close()


KEPT_DATABASE = "memoryd_bench_search"


async def kept_database(admin_dsn: str) -> str:
    """The DSN of the search corpus' own database (``--search-reuse``), migrated."""
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{KEPT_DATABASE}"))
    await create_database_if_missing(admin_dsn, KEPT_DATABASE)
    await migrate(dsn)
    return dsn


async def _loaded(db: Database, total: int) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The two measured users of a corpus of ``total`` messages loaded by an earlier run."""
    if not await db.fetchval("SELECT to_regclass('bench_search_loaded') IS NOT NULL"):
        return None
    row = await db.fetchrow("SELECT big, little FROM bench_search_loaded WHERE total = $1", total)
    return (row["big"], row["little"]) if row else None


async def _measure(svc: Services, runtime: Any, queries: int,
                   little: uuid.UUID, big: uuid.UUID, sizes: tuple[int, int],
                   result: dict[str, Any], log: Log) -> dict[str, Any]:  # fmt: skip
    """Query latency per mode for the two measured users; the same queries in every run
    (drawn from the corpus' vocabulary by a generator of their own)."""
    small, large = sizes
    corpus = Corpus()
    corpus.rng.seed(16)
    qs = corpus.queries(queries)
    modes = ["text", "semantic", "hybrid"] if runtime.semantic else ["text"]
    for label, user_id, size in (("10k", little, small), ("100k", big, large)):
        per: dict[str, Any] = {"messages": size}
        for mode in modes:
            await _latencies(svc, user_id, qs[:10], mode)  # warm the caches
            per[mode] = await _latencies(svc, user_id, qs, mode)
            lat = per[mode]["latency_ms"]
            log(f"  {label} {mode}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
        result[f"user_{label}"] = per
    return result
