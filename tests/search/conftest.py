"""A user with the relevance corpus loaded through the API (shared by the module)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import RunningServer
from tests.helpers import Api, promote
from tests.search.corpus import DOCS, messages_of

_TAG = re.compile(r"</?mark>")


@dataclass
class Loaded:
    user: Api
    memory_ids: dict[str, str]  # corpus key -> memory id
    keys: dict[str, str]  # memory id -> corpus key


async def load_corpus(user: Api) -> Loaded:
    ids: dict[str, str] = {}

    async def one(index: int) -> None:
        doc = DOCS[index]
        fields = {"title": doc.title, "description": doc.description, "tags": list(doc.tags)}
        resp = await user.post("/api/memories", json=fields)
        assert resp.status == 201, resp.body
        memory_id = resp.body["memory"]["id"]
        ids[doc.key] = memory_id
        for text in messages_of(doc, index):
            sent = await user.post(f"/api/memories/{memory_id}/messages", json={"content": text})
            assert sent.status == 201, sent.body

    for start in range(0, len(DOCS), 6):
        await asyncio.gather(*(one(i) for i in range(start, min(len(DOCS), start + 6))))
    return Loaded(user, ids, {v: k for k, v in ids.items()})


def plain(snippet: str) -> str:
    return _TAG.sub("", snippet)


async def search(user: Api, q: str, **params: Any) -> dict[str, Any]:
    resp = await user.get("/api/search", params={"q": q, **params})
    assert resp.status == 200, resp.body
    return resp.body  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="module")
async def corpus(server: RunningServer, http: aiohttp.ClientSession) -> Loaded:
    return await load_corpus(await Api(http, server.url).register())


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


@pytest_asyncio.fixture
async def premium(api: Api, db: Database) -> Api:
    """A fresh user allowed to delete (the default role may not)."""
    return await promote(await api.register(), db)


async def embedded(db: Database, user: Api, timeout: float = 30.0) -> None:
    """Wait until every document of ``user`` has its embedding (the queue is empty)."""
    user_id = user.user["id"]  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + timeout
    while await db.fetchval(
        "SELECT count(*) FROM search_embed_queue WHERE user_id = $1", uuid.UUID(user_id)
    ):
        assert asyncio.get_running_loop().time() < deadline, "embeddings did not catch up"
        await asyncio.sleep(0.05)
