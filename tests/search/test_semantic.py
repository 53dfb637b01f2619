"""Semantic and hybrid search with the default local embedder and pgvector (the embedded
PostgreSQL has it): synonyms, isolation, edits and deletes within a second, the vectors
in their table, and the text-only path where there is no vector store."""

from __future__ import annotations

import time
import uuid

import pytest

from memoryd.config import Settings
from memoryd.errors import ConfigError
from memoryd.server.search import open_search
from memoryd.storage.database import Database
from memoryd.storage.store import Storage
from tests.conftest import StartServer
from tests.helpers import Api
from tests.search.conftest import Loaded, embedded, search
from tests.search.corpus import SEMANTIC_CASES, Case

pytestmark = pytest.mark.storage


async def _pgvector(db: Database) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))


@pytest.fixture
async def vectors(db: Database) -> None:
    if not await _pgvector(db):
        pytest.skip("this PostgreSQL has no pgvector (the text-only path is tested below)")


@pytest.mark.parametrize("case", SEMANTIC_CASES, ids=lambda c: f"{c.kind}:{c.query}")
async def test_semantic_finds_meaning(
    vectors: None, db: Database, corpus: Loaded, case: Case
) -> None:
    await embedded(db, corpus.user)
    body = await search(corpus.user, case.query, mode="semantic", limit=3)
    assert body["mode"] == "semantic" and body["modes"] == ["semantic"]
    assert body["queryEmbeddingMs"] >= 0
    ranked = [corpus.keys.get(r["memory"]["id"]) for r in body["results"]]
    assert ranked[0] in case.top.split("|"), ranked


async def test_hybrid_is_the_default_and_fuses_both(
    vectors: None, db: Database, corpus: Loaded
) -> None:
    await embedded(db, corpus.user)
    body = await search(corpus.user, "castel river fortress", limit=5)
    assert body["mode"] == "hybrid" and body["modes"] == ["text", "semantic"]
    assert corpus.keys[body["results"][0]["memory"]["id"]] == "lisbon"
    # A word only the text ranking knows and a meaning only the semantic one does.
    text = await search(corpus.user, "kitten", mode="text")
    assert text["results"] == []
    hybrid = await search(corpus.user, "kitten")
    assert corpus.keys[hybrid["results"][0]["memory"]["id"]] == "cat"


async def test_vectors_never_cross_users(vectors: None, db: Database, api: Api) -> None:
    owner, other = await api.register(), await api.register()
    mem = await owner.post("/api/memories", json={"title": "Volcano hike"})
    await owner.post(f"/api/memories/{mem.body['memory']['id']}/messages",
                     json={"content": "lava flows glowing on the volcano at night"})  # fmt: skip
    await embedded(db, owner)
    assert (await search(owner, "volcanic eruption", mode="semantic"))["results"]
    for mode in ("semantic", "hybrid"):
        body = await search(other, "volcanic eruption lava", mode=mode)
        assert body["results"] == [], mode
    rows = await db.fetch(
        "SELECT user_id FROM search_vectors WHERE memory_id = $1",
        uuid.UUID(mem.body["memory"]["id"]),
    )
    assert {str(r["user_id"]) for r in rows} == {owner.user["id"]}  # type: ignore[attr-defined]


async def test_edits_and_deletes_reach_semantic_search_within_a_second(
    vectors: None, db: Database, premium: Api
) -> None:
    user = premium
    mem = (await user.post("/api/memories", json={"title": "notes"})).body["memory"]
    piano = {"content": "the piano tuner fixed the hammers and strings"}
    sent = await user.post(f"/api/memories/{mem['id']}/messages", json=piano)
    message = sent.body["message"]
    await embedded(db, user)
    path = f"/api/memories/{mem['id']}/messages/{message['id']}"

    def ids(body: dict) -> list[str]:  # type: ignore[type-arg]
        return [m["id"] for r in body["results"] for m in r["messages"]]

    assert message["id"] in ids(await search(user, "musical instrument repair", mode="semantic"))
    started = time.monotonic()
    assert (await user.patch(path, json={"content": "a hurricane flooded the coast"})).status == 200
    # The old meaning is gone at once (a stale vector is never used) ...
    assert message["id"] not in ids(await search(user, "piano hammers strings", mode="semantic"))
    # ... and the new one is searchable within a second.
    while message["id"] not in ids(await search(user, "storm flood", mode="semantic")):
        assert time.monotonic() - started < 1.0, "the edit was not embedded within a second"
    assert (await user.delete(path)).status == 204
    assert message["id"] not in ids(await search(user, "storm flood", mode="semantic"))
    assert not await db.fetchval(
        "SELECT count(*) FROM search_vectors WHERE message_id = $1", uuid.UUID(message["id"])
    )
    assert (await user.delete(f"/api/memories/{mem['id']}")).status == 204
    assert not await db.fetchval(
        "SELECT count(*) FROM search_vectors WHERE memory_id = $1", uuid.UUID(mem["id"])
    )


async def test_pgvector_table_is_hnsw_cosine_of_the_embedder_dimension(
    vectors: None, db: Database
) -> None:
    dims = await db.fetchval(
        """SELECT atttypmod FROM pg_attribute
           WHERE attrelid = 'search_vectors'::regclass AND attname = 'embedding'"""
    )
    assert dims == 256
    index = await db.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_search_vectors_hnsw'"
    )
    assert "hnsw" in index and "vector_cosine_ops" in index and "WHERE in_graph" in index


async def test_a_dimension_the_index_does_not_have_stops_start_up(
    vectors: None, db: Database, base_settings: Settings
) -> None:
    with pytest.raises(ConfigError, match="256-dimension"):
        await open_search(base_settings.replace(embedding_dimension=128), Storage(db))


async def test_text_only_where_there_is_no_vector_store(
    start_server: StartServer, api: Api, db: Database
) -> None:
    """With no vector store (MEMORYD_VECTOR_STORE=none, as on a PostgreSQL without
    pgvector) search is text only, says so, and refuses semantic."""
    server = await start_server(vector_store="none")
    user = await Api(api.session, server.url).register()
    mem = await user.post("/api/memories", json={"title": "Harbour walk"})
    assert mem.status == 201
    body = await search(user, "harbour")
    assert body["mode"] == "text" and body["modes"] == ["text"] and body["results"]
    for mode in ("semantic", "hybrid"):
        resp = await user.get("/api/search", params={"q": "harbour", "mode": mode})
        assert resp.status == 400 and resp.error_code == "semantic_unavailable", resp.body


async def test_the_default_server_matches_what_the_database_has(api: Api, db: Database) -> None:
    """On the embedded PostgreSQL (pgvector) the default is hybrid; on a PostgreSQL 15
    without pgvector (CI's second run) the same server is text only and works."""
    user = await api.register()
    await user.post("/api/memories", json={"title": "Harbour walk"})
    body = await search(user, "harbour")
    if await _pgvector(db):
        assert body["modes"] == ["text", "semantic"]
    else:
        assert body["modes"] == ["text"]
        resp = await user.get("/api/search", params={"q": "harbour", "mode": "semantic"})
        assert resp.error_code == "semantic_unavailable"
    assert body["results"][0]["memory"]["title"] == "Harbour walk"
