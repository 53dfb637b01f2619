"""Search: a user's memories by what was said in them.

Two rankings, fused by reciprocal rank fusion: ``text`` (PostgreSQL full text in the
user's language, plus pg_trgm for typos and prefixes) and ``semantic`` (the query's
embedding against the vector store). ``hybrid`` uses both and is the default when an
embedder and a vector store are configured. Results are memories with their matching
messages inside; the answer says which modes were used.
"""

from __future__ import annotations

import asyncio
import base64
import time
from uuid import UUID

import msgspec

from memoryd.bridges.vectors import parse_doc_id
from memoryd.errors import ValidationFailed
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.rbac import Permission
from memoryd.handlers.search_rank import (
    Group,
    SimilarWords,
    fuse,
    fuzzy_snippet,
    group,
    marked,
)
from memoryd.protocol.search import MessageMatch, SearchPage, SearchRequest, SearchResult
from memoryd.storage.ai import Snippet
from memoryd.storage.search import Hit, SearchFilter, query_words

CANDIDATES = 200  # hits taken from each ranking before fusion (more for later pages)
MESSAGES_PER_MEMORY = 3
MAX_OFFSET = 1000
SEMANTIC_CANDIDATES = 100  # nearest documents taken (past rank 100 RRF adds < 1/160)
FUZZY_BELOW = 50  # typo and prefix matches are looked for when exact ones are fewer


class _Cursor(msgspec.Struct):
    o: int  # offset in memories
    h: int  # a hash of the query, so a cursor is only used with its own query


_cursor_encode = msgspec.json.Encoder().encode
_cursor_decode = msgspec.json.Decoder(_Cursor).decode


def _query_hash(req: SearchRequest, mode: str) -> int:
    key = (req.q, mode, req.category_id, tuple(req.tags), req.from_, req.to)
    return hash(repr(key)) & 0xFFFFFFFF


def _offset(req: SearchRequest, mode: str) -> int:
    if req.cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(req.cursor + "=" * (-len(req.cursor) % 4))
        cursor = _cursor_decode(raw)
    except (ValueError, msgspec.DecodeError):
        cursor = None
    if cursor is None or cursor.h != _query_hash(req, mode) or not 0 <= cursor.o <= MAX_OFFSET:
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "cursor", "message": "is not a cursor of this search"}],
        )
    return cursor.o


def _cursor(req: SearchRequest, mode: str, offset: int) -> str:
    raw = _cursor_encode(_Cursor(o=offset, h=_query_hash(req, mode)))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mode(svc: Services, requested: str | None) -> str:
    runtime = svc.search
    if requested is None:
        return "hybrid" if runtime.semantic else "text"
    if requested != "text" and not runtime.semantic:
        raise ValidationFailed(
            "Semantic search is not available on this server (no embedder or vector store)",
            code="semantic_unavailable",
            details=[{"field": "mode", "message": "must be text here"}],
        )
    return requested


def _filter(req: SearchRequest) -> SearchFilter:
    if req.from_ is not None and req.to is not None and req.from_ > req.to:
        raise ValidationFailed(
            "Validation failed", details=[{"field": "from", "message": "must not be after `to`"}]
        )
    return SearchFilter(
        category_id=req.category_id, tags=tuple(req.tags), created_from=req.from_,
        created_to=req.to,
    )  # fmt: skip


def _exact_syntax(query: str) -> bool:
    """A quoted phrase or a ``-word`` asks for exactly that: no typo or prefix matches."""
    return '"' in query or any(t.startswith("-") and len(t) > 1 for t in query.split())


async def text_ranking(
    svc: Services, user_id: UUID, query: str, f: SearchFilter, limit: int, any_word: bool = False
) -> list[Hit]:
    """Full text hits fused with the typo and prefix hits."""
    runtime = svc.search
    exact = await svc.store.search.full_text(user_id, query, f, limit=limit, any_word=any_word)
    if any_word or _exact_syntax(query):
        return exact  # Memo's retrieval, or a phrase or -word: exact matches only
    if len(exact) >= FUZZY_BELOW:
        return exact  # enough exact matches: typo and prefix matches would rank below them
    fuzzy = await svc.store.search.fuzzy(user_id, query, f, limit=limit)
    return fuse([(exact, 1.0), (fuzzy, runtime.fuzzy_weight)])


async def semantic_ranking(
    svc: Services, user_id: UUID, query: str, f: SearchFilter, limit: int
) -> tuple[list[Hit], float]:
    """The nearest documents to the query's embedding, and the ms the embedding took."""
    runtime = svc.search
    assert runtime.embedder is not None and runtime.vectors is not None
    started = time.perf_counter()
    [vector] = await runtime.embedder.embed([query])
    embed_ms = (time.perf_counter() - started) * 1000
    matches = await runtime.vectors.query(user_id, vector, limit)
    hits = []
    for m in matches:
        if m.score < runtime.min_similarity:
            continue
        kind, _ = parse_doc_id(m.doc_id)
        hits.append(Hit(m.memory_id, m.message_id if kind == "msg" else None, m.score))
    return await svc.store.search.resolve(user_id, hits, f), embed_ms


async def ranked(
    svc: Services, user_id: UUID, query: str, mode: str, f: SearchFilter, limit: int,
    *, any_word: bool = False,
) -> tuple[list[Hit], list[str], float | None]:  # fmt: skip
    """Every hit of ``query`` in ``mode``, best first; the modes used; the embedding ms."""
    runtime = svc.search
    lists: list[tuple[list[Hit], float]] = []
    modes: list[str] = []
    embed_ms = None
    # The two rankings are independent: run them at once, on two pooled connections.
    text_hits: list[Hit] | None = None
    semantic_hits: tuple[list[Hit], float] | None = None

    async def run_text() -> None:
        nonlocal text_hits
        text_hits = await text_ranking(svc, user_id, query, f, limit, any_word)

    async def run_semantic() -> None:
        nonlocal semantic_hits
        semantic_hits = await semantic_ranking(
            svc, user_id, query, f, min(limit, SEMANTIC_CANDIDATES)
        )

    await asyncio.gather(
        *([run_text()] if mode in ("text", "hybrid") else []),
        *([run_semantic()] if mode in ("semantic", "hybrid") else []),
    )
    if text_hits is not None:
        lists.append((text_hits, runtime.text_weight))
        modes.append("text")
    if semantic_hits is not None:
        lists.append((semantic_hits[0], runtime.semantic_weight))
        embed_ms = semantic_hits[1]
        modes.append("semantic")
    return fuse(lists), modes, embed_ms


async def search(svc: Services, caller: Caller, req: SearchRequest) -> SearchPage:
    caller.require(Permission.READ_MEMORIES)
    query = req.q.strip()
    if not query:
        raise ValidationFailed(
            "Validation failed", details=[{"field": "q", "message": "must not be blank"}]
        )
    mode = _mode(svc, req.mode)
    offset = _offset(req, mode)
    f = _filter(req)
    user_id = caller.user_id
    limit = max(CANDIDATES, (offset + req.limit) * 5)
    hits, modes, embed_ms = await ranked(svc, user_id, query, mode, f, limit)
    groups = group(hits, MESSAGES_PER_MEMORY)
    page = groups[offset : offset + req.limit]
    more = len(groups) > offset + req.limit and offset + req.limit <= MAX_OFFSET
    results = await _results(svc, user_id, query, page)
    return SearchPage(
        results=results,
        mode=mode,
        modes=modes,
        next_cursor=_cursor(req, mode, offset + req.limit) if more else None,
        query_embedding_ms=round(embed_ms, 3) if embed_ms is not None else None,
    )


async def _results(
    svc: Services, user_id: UUID, query: str, page: list[Group]
) -> list[SearchResult]:
    store = svc.store.search
    memories = await store.memories(user_id, [g.memory_id for g in page])
    message_ids = [h.message_id for g in page for h in g.messages if h.message_id]
    texts = await store.message_texts(user_id, message_ids, query)
    own = [g.memory_id for g in page if g.own is not None]
    headlines = await store.memory_headlines(user_id, own, query) if own else {}
    words = SimilarWords(query_words(query))
    results = []
    for g in page:
        memory = memories.get(g.memory_id)
        if memory is None:
            continue  # deleted between the ranking and now
        matches = []
        for hit in g.messages:
            text = texts.get(hit.message_id) if hit.message_id else None
            if text is None:
                continue
            found = marked(text.headline) if text.matched else fuzzy_snippet(text.content, words)
            matches.append(MessageMatch(id=text.id, seq=text.seq, snippet=found,
                                        created_at=text.created_at,
                                        is_ai_generated=text.is_ai_generated,
                                        score=round(hit.score, 6)))  # fmt: skip
        snippet: str | None = None
        if g.own is not None and g.memory_id in headlines:
            headline, matched = headlines[g.memory_id]
            snippet = marked(headline) if matched else fuzzy_snippet(headline, words)
        results.append(SearchResult(memory=memory, score=round(g.score, 6), messages=matches,
                                    snippet=snippet))  # fmt: skip
    return results


async def matching_memories(svc: Services, user_id: UUID, query: str, limit: int) -> list[UUID]:
    """Memories with a message that matches ``query`` in the text ranking (typos too):
    ``GET /api/memories?search=`` adds them to its own matches on the memory's fields."""
    hits = await text_ranking(svc, user_id, query, SearchFilter(), max(CANDIDATES, limit))
    return [g.memory_id for g in group((h for h in hits if h.message_id), 0)][:limit]


async def related(
    svc: Services, user_id: UUID, question: str, exclude_memory: UUID | None, limit: int
) -> list[Snippet]:
    """Memo's context: the user's messages and memories closest to ``question`` (any of
    its words, and its meaning when an embedder is configured), Memo's own messages and
    the thread being answered left out."""
    f = SearchFilter(exclude_memory=exclude_memory, human_only=True)
    mode = "hybrid" if svc.search.semantic else "text"
    hits, _, _ = await ranked(svc, user_id, question, mode, f, limit * 4, any_word=True)
    return (await svc.store.search.documents(user_id, hits[: limit * 2]))[:limit]
