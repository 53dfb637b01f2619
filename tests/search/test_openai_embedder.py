"""Embeddings from an OpenAI-compatible server (the local fake speaking OpenAI's wire
format): batched requests with the configured model and dimension, retried with backoff
when the server fails, resumed from the queue, then searchable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import StartServer
from tests.fakes.openai import FakeOpenAI, Step
from tests.helpers import Api
from tests.search.conftest import embedded, search

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def own_db(own_database: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_database, min_size=1, max_size=2)
    yield database
    await database.close()


async def test_openai_embeddings_batched_retried_and_searchable(
    start_server: StartServer, own_database: str, own_db: Database, fake: FakeOpenAI,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    if not await own_db.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'"):
        pytest.skip("this PostgreSQL has no pgvector")
    server = await start_server(
        database_url=own_database, embedder="openai", openai_base_url=f"{fake.url}/v1",
        openai_api_key="sk-test", openai_embedding_model="text-embedding-3-small",
        embedding_dimension=256, ai_max_retries=0,
    )  # fmt: skip
    user = await Api(http, server.url).register()
    fake.then(Step(status=500), Step(status=503))  # the first two attempts fail
    mem = (await user.post("/api/memories", json={"title": "Garden"})).body["memory"]
    for text in ("the apple tree blossoms", "pruning the apple tree", "new lawn mower"):
        sent = await user.post(f"/api/memories/{mem['id']}/messages", json={"content": text})
        assert sent.status == 201
    await embedded(own_db, user, timeout=20)
    calls = [r for r in fake.requests if r.path == "/v1/embeddings"]
    assert len(calls) >= 3  # two failures, then the batch
    last = calls[-1].body
    assert last["model"] == "text-embedding-3-small" and last["dimensions"] == 256
    assert calls[-1].headers["Authorization"] == "Bearer sk-test"
    embedded_texts = [t for c in calls[2:] for t in c.body["input"]]
    assert "pruning the apple tree" in embedded_texts
    job = await own_db.fetchrow(
        "SELECT status FROM jobs WHERE kind = 'search.embed' AND user_id = $1",
        uuid.UUID(user.user["id"]),  # type: ignore[attr-defined]
    )
    assert job is None  # no job: the node's sweeper embedded the queue (migration 0009)
    body = await search(user, "apple tree", mode="semantic")
    assert body["results"][0]["memory"]["id"] == mem["id"]
    matched = [m["snippet"] for m in body["results"][0]["messages"]]
    assert any("apple" in s for s in matched)
