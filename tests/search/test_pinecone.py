"""Pinecone as the vector store, against the local fake of its data-plane API: one
namespace per user, metadata filter on the user, deletes sent, the SDK's real requests
(paths, Api-Key and X-Pinecone-Api-Version headers), and the dimension check."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from memoryd.bridges.vectors import VectorItem
from memoryd.bridges.vectors.pinecone import PineconeStore
from memoryd.config import Settings
from memoryd.errors import ConfigError
from memoryd.server.search import open_search
from memoryd.storage.database import Database
from memoryd.storage.store import Storage
from tests.conftest import StartServer
from tests.fakes.pinecone import FakePinecone
from tests.helpers import Api, promote
from tests.search.conftest import embedded, search

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture
async def pinecone() -> AsyncIterator[FakePinecone]:
    fake = await FakePinecone().start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(scope="module")
async def own_db(own_database: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_database, min_size=1, max_size=2)
    yield database
    await database.close()


async def test_the_store_speaks_the_data_plane(pinecone: FakePinecone) -> None:
    store = PineconeStore(api_key=pinecone.api_key, host=pinecone.url)
    try:
        await _round_trip(store, pinecone)
    finally:
        await store.aclose()


async def _round_trip(store: PineconeStore, pinecone: FakePinecone) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    memory = uuid.uuid4()
    v = [1.0] + [0.0] * 255
    await store.upsert(alice, [VectorItem(f"mem:{memory}", memory, None, v)], "m")
    await store.upsert(bob, [VectorItem(f"mem:{uuid.uuid4()}", uuid.uuid4(), None, v)], "m")
    assert set(pinecone.namespaces) == {f"user-{alice}", f"user-{bob}"}
    [match] = await store.query(alice, v, 10)
    assert match.doc_id == f"mem:{memory}" and match.memory_id == memory
    assert match.score == pytest.approx(1.0)
    assert await store.fetch(alice, [f"mem:{memory}"]) == {f"mem:{memory}": v}
    await store.delete(alice, [f"mem:{memory}"])
    assert await store.query(alice, v, 10) == []
    assert len(await store.query(bob, v, 10)) == 1
    assert await store.prepare(256) == 256
    paths = [(r.method, r.path.split("?")[0]) for r in pinecone.requests]
    assert ("POST", "/vectors/upsert") in paths and ("POST", "/query") in paths
    assert ("POST", "/vectors/delete") in paths and ("GET", "/vectors/fetch") in paths
    query = next(r for r in pinecone.requests if r.path == "/query")
    assert query.body["namespace"] == f"user-{alice}"
    assert query.body["filter"] == {"userId": {"$eq": str(alice)}}
    assert all(r.headers["Api-Key"] == pinecone.api_key for r in pinecone.requests)
    assert all(r.headers.get("X-Pinecone-Api-Version") for r in pinecone.requests)


async def test_a_wrong_key_is_refused(pinecone: FakePinecone) -> None:
    store = PineconeStore(api_key="wrong", host=pinecone.url)
    try:
        with pytest.raises(Exception, match=r"401|Unauthorized|Invalid API Key"):
            await store.query(uuid.uuid4(), [0.0] * 256, 3)
    finally:
        await store.aclose()


async def test_the_index_dimension_is_checked_at_start_up(
    pinecone: FakePinecone, own_db: Database, base_settings: Settings
) -> None:
    pinecone.dimension = 1536
    settings = base_settings.replace(
        vector_store="pinecone", pinecone_api_key=pinecone.api_key, pinecone_host=pinecone.url
    )
    with pytest.raises(ConfigError, match="1536-dimension"):
        await open_search(settings, Storage(own_db))


async def test_search_through_pinecone_namespaces(
    start_server: StartServer, own_database: str, own_db: Database, pinecone: FakePinecone,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    server = await start_server(
        database_url=own_database, vector_store="pinecone",
        pinecone_api_key=pinecone.api_key, pinecone_host=pinecone.url,
    )  # fmt: skip
    owner = await promote(await Api(http, server.url).register(), own_db)
    other = await Api(http, server.url).register()
    mem = (await owner.post("/api/memories", json={"title": "Lighthouse"})).body["memory"]
    said = {"content": "the lighthouse keeper climbed the tower"}
    sent = await owner.post(f"/api/memories/{mem['id']}/messages", json=said)
    await other.post("/api/memories", json={"title": "Shopping list"})
    await embedded(own_db, owner)
    await embedded(own_db, other)
    ns = pinecone.namespaces[f"user-{owner.user['id']}"]  # type: ignore[attr-defined]
    assert f"msg:{sent.body['message']['id']}" in ns and f"mem:{mem['id']}" in ns
    assert all(v["metadata"]["userId"] == owner.user["id"] for v in ns.values())  # type: ignore[attr-defined]
    body = await search(owner, "beacon on the coast", mode="semantic")
    assert body["modes"] == ["semantic"] and body["results"][0]["memory"]["id"] == mem["id"]
    for mode in ("semantic", "hybrid"):
        assert (await search(other, "lighthouse keeper tower", mode=mode))["results"] == [], mode
    # A delete reaches Pinecone (and is out of the results at once).
    path = f"/api/memories/{mem['id']}/messages/{sent.body['message']['id']}"
    assert (await owner.delete(path)).status == 204
    body = await search(owner, "lighthouse keeper", mode="semantic")
    assert sent.body["message"]["id"] not in [
        m["id"] for r in body["results"] for m in r["messages"]
    ]
    await embedded(own_db, owner)
    assert f"msg:{sent.body['message']['id']}" not in ns
