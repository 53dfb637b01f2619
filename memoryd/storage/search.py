"""Search queries of one user: full text and trigram hits, documents behind vector hits,
snippets, and the queue of documents whose embedding is stale.

Documents are a memory's own text (``mem:<id>``) and each message (``msg:<id>``). The
full text vectors and trigram text are kept by triggers (migrations 0005, and 0007 for the
names of a message's files), so every write path is indexed in its own transaction. Every
query here is scoped by ``user_id``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from memoryd.protocol.models import Memory
from memoryd.storage.ai import Snippet
from memoryd.storage.database import Database
from memoryd.storage.rows import MEMORY_COLUMNS, to_models

# Below this, a word of the query is matched as a prefix only (trigrams of a one- or
# two-letter word match nearly everything).
MIN_TRIGRAM_CHARS = 3
# pg_trgm's similarity of two words that a typo needs to be corrected: "castel" ~ "castle"
# is 0.4, "kitten" ~ "kitchen" 0.36, "tower" ~ "lower" 0.33.
WORD_SIMILARITY = 0.4
START, STOP = "\x02", "\x03"  # ts_headline's marks, turned into <mark> after escaping
_HEADLINE = (
    f'StartSel="{START}", StopSel="{STOP}", MaxWords=30, MinWords=12, ShortWord=2, '
    'MaxFragments=2, FragmentDelimiter=" … "'
)
# Put after each run of punctuation in a file name for ts_headline, then removed: its
# parser reads `invoice-march.pdf` as one token, `invoice-\x01march.\x01pdf` as three words,
# so a word of the name is marked.
_CUT = "\x01"
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_WORDS = 16
# Typo and prefix matches read at most this many messages: they rank below every exact
# match, and a prefix of a common word ("nem") matches thousands.
FUZZY_CANDIDATES = 1000
_MAX_COMPLETIONS = 10  # vocabulary words a prefix stands for
_MAX_FUZZY_WORDS = 6


@dataclass(frozen=True)
class SearchFilter:
    category_id: UUID | None = None
    tags: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None
    exclude_memory: UUID | None = None
    human_only: bool = False  # Memo's retrieval: not Memo's own or failed messages


@dataclass(frozen=True)
class Hit:
    """A matching document: a memory's own text (``message_id`` None) or a message."""

    memory_id: UUID
    message_id: UUID | None
    score: float

    @property
    def doc_id(self) -> str:
        return f"msg:{self.message_id}" if self.message_id else f"mem:{self.memory_id}"


@dataclass(frozen=True)
class MessageText:
    id: UUID
    memory_id: UUID
    seq: int
    created_at: datetime
    is_ai_generated: bool
    headline: str  # ts_headline's fragments, with START/STOP marks
    matched: bool  # the full text query matched (else the headline has no marks)
    content: str  # the message's content, then its files' names


@dataclass(frozen=True)
class EmbedDoc:
    """A queued document: its text now, or None when it is gone (delete its vector)."""

    doc_id: str
    queued_at: datetime
    memory_id: UUID | None
    message_id: UUID | None
    text: str | None
    user_id: UUID


# Queued documents (``{queue}``: rows of search_embed_queue) with their text now: a
# message's content or a memory's own text, None for a deleted one (its vector goes).
_QUEUED_DOCS = """
    SELECT q.doc_id, q.user_id, q.queued_at,
           coalesce(msg.memory_id, m.id) AS memory_id, msg.id AS message_id,
           CASE WHEN q.deleted THEN NULL
                WHEN msg.id IS NOT NULL THEN msg.content
                ELSE m.search_text END AS text
    FROM {queue} q
    LEFT JOIN messages msg ON q.doc_id LIKE 'msg:%'
         AND msg.id = substr(q.doc_id, 5)::uuid AND msg.user_id = q.user_id
    LEFT JOIN memories m ON q.doc_id LIKE 'mem:%'
         AND m.id = substr(q.doc_id, 5)::uuid AND m.user_id = q.user_id
    ORDER BY q.queued_at"""


def query_words(text: str) -> list[str]:
    """The words of a query (``\\w`` runs, lower case, first ones, no repeats)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        seen.setdefault(word)
    return list(seen)[:_MAX_WORDS]


def _tsquery_terms(words: Sequence[str], joiner: str, prefix: bool) -> str | None:
    # \w runs only, so no tsquery syntax gets in; quoted so that digits stay terms.
    terms = [f"'{w}'" + (":*" if prefix else "") for w in words if "'" not in w]
    return f" {joiner} ".join(terms) or None


class _Where:
    """WHERE clauses of one query; values become numbered parameters."""

    def __init__(self, args: list[Any]) -> None:
        self.args = args

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def memory(self, f: SearchFilter, m: str = "m") -> str:
        parts = []
        if f.category_id is not None:
            parts.append(f"{m}.category_id = {self.param(f.category_id)}")
        if f.tags:
            parts.append(f"{m}.tags @> {self.param(list(f.tags))}::text[]")
        if f.exclude_memory is not None:
            parts.append(f"{m}.id <> {self.param(f.exclude_memory)}")
        return "".join(f" AND {p}" for p in parts)

    def created(self, f: SearchFilter, column: str) -> str:
        parts = []
        if f.created_from is not None:
            parts.append(f"{column} >= {self.param(f.created_from)}")
        if f.created_to is not None:
            parts.append(f"{column} <= {self.param(f.created_to)}")
        return "".join(f" AND {p}" for p in parts)

    def message(self, f: SearchFilter, msg: str = "msg") -> str:
        extra = self.created(f, f"{msg}.created_at")
        if f.human_only:
            extra += f" AND NOT {msg}.is_ai_generated AND {msg}.status = 'sent'"
        return extra


def _hits(rows: Sequence[Any]) -> list[Hit]:
    return [Hit(r["memory_id"], r["message_id"], float(r["score"])) for r in rows]


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def text_config(self, user_id: UUID) -> str:
        """The text search configuration of the user's language (``simple`` as fallback)."""
        value = await self.db.fetchval(
            "SELECT memoryd_ts_config(language)::text FROM users WHERE id = $1", user_id
        )
        return str(value or "simple")

    async def full_text(
        self, user_id: UUID, query: str, f: SearchFilter, *, limit: int, any_word: bool = False
    ) -> list[Hit]:
        """Documents matching ``websearch_to_tsquery`` (quotes, ``or``, ``-word``), or with
        ``any_word`` any word of ``query``; ranked by ``ts_rank`` (weights A title,
        B description and tags, C content and messages)."""
        if any_word:
            terms = _tsquery_terms(query_words(query), "|", prefix=False)
            if terms is None:
                return []
            return await self._ranked(self.db, user_id, "to_tsquery", terms, f, limit)
        return await self._ranked(self.db, user_id, "websearch_to_tsquery", query, f, limit)

    async def _ranked(
        self, conn: Any, user_id: UUID, parser: str, text: str, f: SearchFilter, limit: int,
        *, candidates: int | None = None,
    ) -> list[Hit]:  # fmt: skip
        """Ranked hits of a tsquery. With ``candidates``, only that many matching messages
        are read and ranked: a prefix or a correction of a common word matches thousands,
        and reading every one of them (not the ranking) is what costs."""
        args: list[Any] = [user_id]
        w = _Where(args)
        tsquery = f"{parser}(cfg.c, {w.param(text)})"
        mem_where = w.memory(f) + w.created(f, "m.created_at")
        by_memory = w.memory(f)
        msg_where = by_memory + w.message(f)
        # The memory is joined only for a filter on it: a frequent word matches thousands
        # of messages, and a join per match would cost more than the ranking.
        joined = "JOIN memories m ON m.id = msg.memory_id" if by_memory else ""
        cap = f"LIMIT {int(candidates)}" if candidates is not None else ""
        rows = await conn.fetch(
            f"""WITH cfg AS MATERIALIZED (
                    SELECT memoryd_ts_config(language) AS c FROM users WHERE id = $1),
                q AS MATERIALIZED (SELECT {tsquery} AS tq FROM cfg)
                (SELECT m.id AS memory_id, NULL::uuid AS message_id,
                        ts_rank(m.search_tsv, q.tq) AS score
                 FROM memories m, q
                 WHERE m.user_id = $1 AND m.search_tsv @@ q.tq {mem_where})
                UNION ALL
                (SELECT c.memory_id, c.id, ts_rank(c.search_tsv, q.tq)
                 FROM (SELECT msg.memory_id, msg.id, msg.search_tsv
                       FROM messages msg {joined}, q
                       WHERE msg.user_id = $1 AND msg.search_tsv @@ q.tq {msg_where}
                       {cap}) c, q)
                ORDER BY score DESC, message_id NULLS FIRST, memory_id LIMIT {w.param(limit)}""",
            *args,
        )
        return _hits(rows)

    async def alternatives(self, user_id: UUID, words: Sequence[str]) -> dict[str, list[str]]:
        """For each of ``words``, words of the user's own vocabulary it may stand for: up
        to three close ones by pg_trgm similarity (a typo: "castel" -> "castle") and up to
        ten it begins (a prefix: "vacc" -> "vaccine", shortest first). One round trip,
        on the vocabulary's indexes only: a prefix of a common word expanded inside the
        full text index would walk every user's matching words."""
        if not words:
            return {}
        # `%` finds candidates by the trigram index at pg_trgm's default threshold (0.3);
        # the similarity filter then keeps what is close enough to correct.
        rows = await self.db.fetch(
            f"""SELECT q.w, v.word FROM unnest($2::text[]) AS q(w)
                CROSS JOIN LATERAL (
                    (SELECT word FROM search_words
                     WHERE length(q.w) >= {MIN_TRIGRAM_CHARS} AND user_id = $1
                       AND word % q.w AND word <> q.w
                       AND similarity(word, q.w) >= {WORD_SIMILARITY:.2f}
                     ORDER BY similarity(word, q.w) DESC, word LIMIT 3)
                    UNION ALL
                    (SELECT word FROM search_words
                     WHERE user_id = $1 AND word >= q.w AND word < q.w || chr(1114111)
                     ORDER BY length(word), word LIMIT {_MAX_COMPLETIONS})) v""",
            user_id,
            list(words),
        )
        out: dict[str, list[str]] = {}
        for r in rows:
            found = out.setdefault(r["w"], [])
            if r["word"] not in found:
                found.append(r["word"])
        return out

    async def fuzzy(self, user_id: UUID, query: str, f: SearchFilter, *, limit: int) -> list[Hit]:
        """Typos and prefixes: every word of the query replaced by the words of the user's
        vocabulary it begins (``vacc`` finds vaccination) or is close to (``castel`` finds
        castle), any word; ranked by ``ts_rank`` (more of the words rank higher)."""
        words = [w for w in query_words(query)[:_MAX_FUZZY_WORDS] if "'" not in w]
        found = await self.alternatives(user_id, words)
        terms = [" | ".join(f"'{a}'" for a in found[w] if "'" not in a) for w in words
                 if found.get(w)]  # fmt: skip
        if not terms:
            return []
        tsquery = " | ".join(f"({t})" for t in terms)
        return await self._ranked(self.db, user_id, "to_tsquery", tsquery, f, limit,
                                  candidates=FUZZY_CANDIDATES)  # fmt: skip

    async def resolve(self, user_id: UUID, hits: Sequence[Hit], f: SearchFilter) -> list[Hit]:
        """The hits (from a vector store) that are still the user's, pass the filters and
        are not waiting to be embedded again (edited or deleted); order kept."""
        if not hits:
            return []
        args: list[Any] = [user_id]
        w = _Where(args)
        mems = w.param([h.memory_id for h in hits if h.message_id is None])
        msgs = w.param([h.message_id for h in hits if h.message_id is not None])
        mem_where = w.memory(f) + w.created(f, "m.created_at")
        msg_where = w.memory(f) + w.message(f)
        rows = await self.db.fetch(
            f"""SELECT 'mem:' || m.id AS doc_id FROM memories m
                WHERE m.user_id = $1 AND m.id = ANY({mems}::uuid[]) {mem_where}
                  AND NOT EXISTS (SELECT 1 FROM search_embed_queue qu
                                  WHERE qu.doc_id = 'mem:' || m.id)
                UNION ALL
                SELECT 'msg:' || msg.id FROM messages msg JOIN memories m ON m.id = msg.memory_id
                WHERE msg.user_id = $1 AND msg.id = ANY({msgs}::uuid[]) {msg_where}
                  AND NOT EXISTS (SELECT 1 FROM search_embed_queue qu
                                  WHERE qu.doc_id = 'msg:' || msg.id)""",
            *args,
        )
        valid = {r["doc_id"] for r in rows}
        return [h for h in hits if h.doc_id in valid]

    async def memories(self, user_id: UUID, ids: Sequence[UUID]) -> dict[UUID, Memory]:
        rows = await self.db.fetch(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = $1 AND id = ANY($2::uuid[])",
            user_id,
            list(ids),
        )
        return {m.id: m for m in to_models(Memory, rows)}

    async def message_texts(
        self, user_id: UUID, ids: Sequence[UUID], query: str | None
    ) -> dict[UUID, MessageText]:
        """The messages with ``ts_headline`` fragments for ``query`` (marked START/STOP).

        A message's text here is its content followed by its files' names (they are in its
        full text vector too, migration 0007), so a match on a name gets a snippet."""
        rows = await self.db.fetch(
            f"""WITH q AS MATERIALIZED (
                    SELECT u.c, websearch_to_tsquery(u.c, coalesce($3, '')) AS tq
                    FROM (SELECT memoryd_ts_config(language) AS c FROM users
                          WHERE id = $1) u),
                d AS (
                    SELECT msg.*, nullif(left(msg.content, 20000), '') AS body,
                           memoryd_message_file_names(msg.user_id, msg.id) AS names
                    FROM messages msg WHERE msg.user_id = $1 AND msg.id = ANY($2::uuid[]))
                SELECT d.id, d.memory_id, d.seq, d.created_at, d.is_ai_generated,
                       concat_ws(' ', d.body, d.names) AS content,
                       d.search_tsv @@ q.tq AS matched,
                       CASE WHEN d.search_tsv @@ q.tq
                            THEN replace(ts_headline(q.c, concat_ws(' ', d.body,
                                     regexp_replace(d.names, '([^[:alnum:][:space:]]+)',
                                                    '\\1' || $4, 'g')),
                                     q.tq, '{_HEADLINE}'), $4, '')
                            ELSE '' END AS headline
                FROM d, q""",
            user_id,
            list(ids),
            query,
            _CUT,
        )
        return {r["id"]: MessageText(**dict(r.items())) for r in rows}

    async def memory_headlines(
        self, user_id: UUID, ids: Sequence[UUID], query: str
    ) -> dict[UUID, tuple[str, bool]]:
        """A memory's own text, with ``ts_headline`` marks where the query matched it."""
        rows = await self.db.fetch(
            f"""WITH q AS MATERIALIZED (
                    SELECT u.c, websearch_to_tsquery(u.c, $3) AS tq
                    FROM (SELECT memoryd_ts_config(language) AS c FROM users
                          WHERE id = $1) u)
                SELECT m.id, m.search_tsv @@ q.tq AS matched,
                       CASE WHEN m.search_tsv @@ q.tq
                            THEN ts_headline(q.c, left(m.search_text, 20000), q.tq,
                                             '{_HEADLINE}')
                            ELSE left(m.search_text, 20000) END AS headline
                FROM memories m, q WHERE m.user_id = $1 AND m.id = ANY($2::uuid[])""",
            user_id,
            list(ids),
            query,
        )
        return {r["id"]: (r["headline"] or "", bool(r["matched"])) for r in rows}

    async def documents(self, user_id: UUID, hits: Sequence[Hit]) -> list[Snippet]:
        """The text of each hit (a message, or a memory's own text), in the hits' order."""
        rows = await self.db.fetch(
            """SELECT m.id AS memory_id, NULL::uuid AS message_id, m.title,
                      left(m.search_text, 2000) AS text
               FROM memories m WHERE m.user_id = $1 AND m.id = ANY($2::uuid[])
               UNION ALL
               SELECT msg.memory_id, msg.id, m.title, left(msg.content, 2000)
               FROM messages msg JOIN memories m ON m.id = msg.memory_id
               WHERE msg.user_id = $1 AND msg.id = ANY($3::uuid[])""",
            user_id,
            [h.memory_id for h in hits if h.message_id is None],
            [h.message_id for h in hits if h.message_id is not None],
        )
        found = {(r["memory_id"], r["message_id"]): r for r in rows}
        out = []
        for h in hits:
            r = found.get((h.memory_id, h.message_id))
            if r is not None and r["text"]:
                out.append(Snippet(h.memory_id, h.message_id, r["title"], r["text"], h.score))
        return out

    # -- embeddings -----------------------------------------------------------------------

    async def set_embedding(
        self, enabled: bool, model: str | None, dimension: int | None, store: str | None
    ) -> tuple[str | None, int | None, str | None]:
        """Switch queueing on or off; return the model, dimension and store recorded
        before (what the index was built with), then record the new ones."""
        async with self.db.transaction() as conn:
            before = await conn.fetchrow(
                "SELECT model, dimension, store FROM search_state FOR UPDATE"
            )
            if enabled:
                await conn.execute(
                    "UPDATE search_state SET embed = TRUE, model = $1, dimension = $2, store = $3",
                    model,
                    dimension,
                    store,
                )
            else:
                await conn.execute("UPDATE search_state SET embed = FALSE")
        if before is None:
            return None, None, None
        return before["model"], before["dimension"], before["store"]

    async def queued(self, user_id: UUID, limit: int) -> list[EmbedDoc]:
        """The user's oldest queued documents with their text now."""
        rows = await self.db.fetch(
            _QUEUED_DOCS.format(
                queue="""(SELECT * FROM search_embed_queue WHERE user_id = $1
                          ORDER BY queued_at LIMIT $2)"""
            ),
            user_id,
            limit,
        )
        return [EmbedDoc(**dict(r.items())) for r in rows]

    async def lease_queued(self, limit: int, lease_seconds: float) -> list[EmbedDoc]:
        """The oldest queued documents of any users that no other sweep holds, leased
        for ``lease_seconds`` (committed at once: no lock is held while they embed),
        with their text now."""
        rows = await self.db.fetch(
            """WITH picked AS (
                   SELECT doc_id FROM search_embed_queue
                   WHERE leased_until IS NULL OR leased_until < now()
                   ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED),
               leased AS (
                   UPDATE search_embed_queue qu
                   SET leased_until = now() + make_interval(secs => $2)
                   FROM picked WHERE qu.doc_id = picked.doc_id
                   RETURNING qu.*)
            """
            + _QUEUED_DOCS.format(queue="leased"),
            limit,
            lease_seconds,
        )
        return [EmbedDoc(**dict(r.items())) for r in rows]

    async def release(self, docs: Sequence[EmbedDoc]) -> None:
        """End the lease of documents a failed sweep could not embed."""
        if docs:
            await self.db.execute(
                "UPDATE search_embed_queue SET leased_until = NULL WHERE doc_id = ANY($1::text[])",
                [d.doc_id for d in docs],
            )

    async def dequeue(self, docs: Sequence[EmbedDoc]) -> None:
        """Remove what was embedded, unless it was queued again meanwhile (a newer edit)."""
        if docs:
            await self.db.execute(
                """DELETE FROM search_embed_queue qu USING unnest($1::text[], $2::timestamptz[])
                       AS d(doc_id, queued_at)
                   WHERE qu.doc_id = d.doc_id AND qu.queued_at = d.queued_at""",
                [d.doc_id for d in docs],
                [d.queued_at for d in docs],
            )

    async def finish_embed_job(self, job_id: UUID, node: str, gen: int) -> bool:
        """Mark the user's embedding job done unless a write queued more since ``gen``
        (its trigger bumps the job's ``gen`` under the row lock it holds until commit)."""
        status = await self.db.execute(
            """UPDATE jobs SET status = 'done', lease_until = NULL, last_error = NULL,
                   updated_at = now()
               WHERE id = $1 AND leased_by = $2 AND status = 'running'
                 AND coalesce((payload ->> 'gen')::bigint, 0) = $3""",
            job_id,
            node,
            gen,
        )
        return status.endswith(" 1")

    async def embed_gen(self, job_id: UUID) -> int:
        value = await self.db.fetchval(
            "SELECT coalesce((payload ->> 'gen')::bigint, 0) FROM jobs WHERE id = $1", job_id
        )
        return int(value or 0)

    async def queue_all(self, user_id: UUID | None) -> int:
        """Queue every document of one user (or all users) for embedding; the count."""
        return int(
            await self.db.fetchval(
                """WITH docs AS (
                       SELECT 'mem:' || id AS doc_id, user_id FROM memories
                       WHERE $1::uuid IS NULL OR user_id = $1
                       UNION ALL
                       SELECT 'msg:' || id, user_id FROM messages
                       WHERE $1::uuid IS NULL OR user_id = $1),
                   added AS (
                       INSERT INTO search_embed_queue (doc_id, user_id)
                       SELECT doc_id, user_id FROM docs
                       ON CONFLICT (doc_id) DO NOTHING RETURNING 1)
                   SELECT count(*) FROM docs""",
                user_id,
            )
        )

    async def queued_users(self, user_id: UUID | None) -> list[tuple[UUID, int]]:
        rows = await self.db.fetch(
            """SELECT user_id, count(*) AS n FROM search_embed_queue
               WHERE $1::uuid IS NULL OR user_id = $1 GROUP BY user_id ORDER BY user_id""",
            user_id,
        )
        return [(r["user_id"], int(r["n"])) for r in rows]

    async def open_reindex(self, user_id: UUID | None) -> tuple[UUID, int, bool]:
        """The unfinished reindex run of this scope (resumed: True), or a new one that has
        queued every document."""
        row = await self.db.fetchrow(
            """SELECT id, total FROM search_reindex_runs
               WHERE finished_at IS NULL AND user_id IS NOT DISTINCT FROM $1
               ORDER BY started_at DESC LIMIT 1""",
            user_id,
        )
        if row is not None:
            return row["id"], int(row["total"]), True
        total = await self.queue_all(user_id)
        run_id = await self.db.fetchval(
            "INSERT INTO search_reindex_runs (user_id, total) VALUES ($1, $2) RETURNING id",
            user_id,
            total,
        )
        return run_id, total, False

    async def close_unfinished_reindex(self, user_id: UUID | None) -> None:
        await self.db.execute(
            """UPDATE search_reindex_runs SET finished_at = now()
               WHERE finished_at IS NULL AND user_id IS NOT DISTINCT FROM $1""",
            user_id,
        )

    async def close_reindex(self, run_id: UUID) -> None:
        await self.db.execute(
            "UPDATE search_reindex_runs SET finished_at = now() WHERE id = $1", run_id
        )

    async def refresh_text(self, user_id: UUID | None, batch: int = 2000) -> int:
        """Rebuild the full text vectors (after a change of language): the triggers
        recompute them; in batches, each its own transaction."""
        done = 0
        for table, column in (("memories", "title"), ("messages", "content")):
            last = UUID(int=0)
            while True:
                ids = await self.db.fetch(
                    f"""SELECT id FROM {table} WHERE ($1::uuid IS NULL OR user_id = $1)
                        AND id > $2 ORDER BY id LIMIT $3""",
                    user_id,
                    last,
                    batch,
                )
                if not ids:
                    break
                last = ids[-1]["id"]
                await self.db.execute(
                    f"""UPDATE {table} SET search_tsv = NULL, {column} = {column}
                        WHERE id = ANY($1::uuid[])""",
                    [r["id"] for r in ids],
                )
                done += len(ids)
        return done
