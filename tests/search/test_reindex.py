"""``memoryd reindex`` as a real subprocess: rebuilds every embedding of a user with a
progress bar, stops and resumes from where it was, starts over with --restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import StartServer
from tests.helpers import Api
from tests.test_cli import _memoryd

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def own_db(own_database: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_database, min_size=1, max_size=2)
    yield database
    await database.close()


async def _vectors(db: Database, user: Api) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM search_vectors WHERE user_id = $1",
        uuid.UUID(user.user["id"]),  # type: ignore[attr-defined]
    ))  # fmt: skip


async def test_reindex_rebuilds_stops_and_resumes(
    tmp_path: Path, start_server: StartServer, own_database: str, own_db: Database,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    if not await own_db.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
        pytest.skip("this PostgreSQL has no pgvector")
    # A node with no vector store writes the data: nothing gets embedded.
    server = await start_server(database_url=own_database, vector_store="none")
    user = await Api(http, server.url).register()
    mem = (await user.post("/api/memories", json={"title": "Reading list"})).body["memory"]
    for i in range(11):
        await user.post(f"/api/memories/{mem['id']}/messages", json={"content": f"book {i}"})
    env = {"DATABASE_URL": own_database, "MEMORYD_LOG_LEVEL": "warning"}
    email = user.email  # type: ignore[attr-defined]

    first = await _memoryd(tmp_path, "reindex", "--user", email, "--stop-after", "5", **env)
    assert first.code == 0, first.stderr
    assert "started a run of 12 documents; embedded 5 now" in first.stdout
    assert "run `memoryd reindex` again to resume" in first.stdout
    assert "embedding" in first.stdout  # the progress bar
    assert await _vectors(own_db, user) == 5

    second = await _memoryd(tmp_path, "reindex", "--user", email, **env)
    assert second.code == 0, second.stderr
    assert "resumed a run of 12 documents; embedded 7 now" in second.stdout
    assert await _vectors(own_db, user) == 12

    again = await _memoryd(tmp_path, "reindex", "--user", email, "--text", **env)
    assert again.code == 0, again.stderr
    assert "started a run of 12 documents; embedded 12 now" in again.stdout
    assert "rebuilt the full text vectors of 12 documents" in again.stdout

    missing = await _memoryd(tmp_path, "reindex", "--user", "nobody@example.com", **env)
    assert missing.code == 2 and "no user with email" in missing.stderr
