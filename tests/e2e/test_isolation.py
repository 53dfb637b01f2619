"""One user can neither see nor change another's memories, messages or categories.

The intruder holds every permission a plain user can get (premium, so DELETE reaches the
lookup instead of stopping at RBAC): whatever they try on the owner's rows is a 404 that
says nothing, exactly as for an id that does not exist, and the owner's rows stay as
they were.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import RunningServer
from tests.helpers import Api, Response, promote

pytestmark = pytest.mark.storage

SECRET = "owner-secret-7f3a"


@dataclass
class Owned:
    owner: Api
    intruder: Api
    category: dict[str, Any]
    memory: dict[str, Any]
    message: dict[str, Any]


@pytest_asyncio.fixture(scope="module")
async def owned(
    server: RunningServer, http: aiohttp.ClientSession, database_url: str
) -> AsyncIterator[Owned]:
    api = Api(http, server.url)
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        owner = await api.register()
        intruder = await promote(await api.register(), db)
    finally:
        await db.close()
    category = await owner.post("/api/categories", json={"name": f"Cat {SECRET}"})
    assert category.status == 201
    memory = await owner.post(
        "/api/memories",
        json={
            "title": f"Title {SECRET}",
            "categoryId": category.body["category"]["id"],
            "tags": [SECRET],
        },
    )
    assert memory.status == 201
    memory_id = memory.body["memory"]["id"]
    message = await owner.post(
        f"/api/memories/{memory_id}/messages",
        json={"content": f"Message {SECRET}", "clientMsgId": "owner-msg-1"},
    )
    assert message.status == 201
    yield Owned(
        owner,
        intruder,
        category.body["category"],
        memory.body["memory"],
        message.body["message"],
    )


def _assert_not_found(resp: Response) -> None:
    assert resp.status == 404, resp.body
    assert resp.error_code == "not_found"
    assert SECRET not in str(resp.body)
    assert SECRET not in str(resp.headers)


async def _owner_state(o: Owned) -> tuple[Any, ...]:
    memory = await o.owner.get(f"/api/memories/{o.memory['id']}")
    messages = await o.owner.get(f"/api/memories/{o.memory['id']}/messages")
    categories = await o.owner.get("/api/categories")
    return memory.body, messages.body, categories.body


async def test_every_request_on_anothers_memory_is_404(owned: Owned) -> None:
    before = await _owner_state(owned)
    b = owned.intruder
    path = f"/api/memories/{owned.memory['id']}"
    _assert_not_found(await b.get(path))
    _assert_not_found(await b.patch(path, json={"title": "mine now"}))
    _assert_not_found(await b.patch(path, json={"isFavorite": True}))
    _assert_not_found(await b.delete(path))
    assert await _owner_state(owned) == before


async def test_every_request_on_anothers_messages_is_404(owned: Owned) -> None:
    before = await _owner_state(owned)
    b = owned.intruder
    base = f"/api/memories/{owned.memory['id']}/messages"
    one = f"{base}/{owned.message['id']}"
    _assert_not_found(await b.get(base))
    _assert_not_found(await b.get(base, params={"limit": 100, "sortOrder": "asc"}))
    _assert_not_found(await b.post(base, json={"content": "injected"}))
    _assert_not_found(await b.post(base, json={"content": "x", "clientMsgId": "owner-msg-1"}))
    _assert_not_found(await b.get(one))
    _assert_not_found(await b.patch(one, json={"content": "edited"}))
    _assert_not_found(await b.delete(one))

    # The owner's message id under the intruder's own memory is not found either.
    mine = await b.post("/api/memories", json={"title": "intruder's"})
    cross = f"/api/memories/{mine.body['memory']['id']}/messages/{owned.message['id']}"
    _assert_not_found(await b.get(cross))
    _assert_not_found(await b.patch(cross, json={"content": "edited"}))
    _assert_not_found(await b.delete(cross))
    assert await _owner_state(owned) == before


async def test_every_request_on_anothers_category_is_404(owned: Owned) -> None:
    before = await _owner_state(owned)
    b = owned.intruder
    path = f"/api/categories/{owned.category['id']}"
    _assert_not_found(await b.patch(path, json={"name": "mine now"}))
    _assert_not_found(await b.delete(path))
    assert await _owner_state(owned) == before


async def test_foreign_ids_are_not_accepted_as_references(owned: Owned) -> None:
    b = owned.intruder
    bad_category = await b.post("/api/memories", json={"categoryId": owned.category["id"]})
    assert bad_category.status == 400
    assert SECRET not in str(bad_category.body)

    mine = await b.post("/api/memories", json={"title": "intruder's"})
    mine_id = mine.body["memory"]["id"]
    moved = await b.patch(f"/api/memories/{mine_id}", json={"categoryId": owned.category["id"]})
    assert moved.status == 400
    listed = await b.get("/api/memories", params={"categoryId": owned.category["id"]})
    assert listed.status == 200
    assert listed.body["memories"] == []

    reply = await b.post(
        f"/api/memories/{mine_id}/messages",
        json={"content": "x", "parentId": owned.message["id"]},
    )
    assert reply.status == 400
    assert SECRET not in str(reply.body)

    # The same clientMsgId as the owner's is simply a new message of the intruder's.
    same_key = await b.post(
        f"/api/memories/{mine_id}/messages", json={"content": "x", "clientMsgId": "owner-msg-1"}
    )
    assert same_key.status == 201
    assert same_key.body["message"]["id"] != owned.message["id"]
    assert same_key.header("Idempotent-Replayed") is None


async def test_lists_never_contain_anothers_rows(owned: Owned) -> None:
    b = owned.intruder
    await b.post("/api/memories", json={"title": "intruder's own"})
    for params in (
        {},
        {"search": SECRET},
        {"search": "Title"},
        {"tags": SECRET},
        {"categoryId": owned.category["id"]},
        {"limit": 100, "sortBy": "title", "sortOrder": "asc"},
    ):
        resp = await b.get("/api/memories", params=params)
        assert resp.status == 200, resp.body
        assert SECRET not in str(resp.body), params
        assert all(m["userId"] == b.user["id"] for m in resp.body["memories"])  # type: ignore[attr-defined]
        assert owned.memory["id"] not in {m["id"] for m in resp.body["memories"]}

    categories = await b.get("/api/categories")
    assert SECRET not in str(categories.body)
    assert owned.category["id"] not in {c["id"] for c in categories.body["categories"]}
    assert {c["userId"] for c in categories.body["categories"]} == {b.user["id"]}  # type: ignore[attr-defined]

    # And the owner sees their rows (so the checks above could fail).
    assert SECRET in str((await owned.owner.get("/api/memories")).body)
    assert SECRET in str((await owned.owner.get("/api/categories")).body)


async def test_a_foreign_id_looks_exactly_like_a_missing_one(owned: Owned) -> None:
    b = owned.intruder
    missing = str(uuid.uuid4())
    foreign = await b.get(f"/api/memories/{owned.memory['id']}")
    absent = await b.get(f"/api/memories/{missing}")
    assert (foreign.status, foreign.body) == (absent.status, absent.body)
    foreign_msg = await b.get(f"/api/memories/{owned.memory['id']}/messages")
    absent_msg = await b.get(f"/api/memories/{missing}/messages")
    assert (foreign_msg.status, foreign_msg.body) == (absent_msg.status, absent_msg.body)


async def test_a_plain_user_is_refused_deletes_alike_for_foreign_and_missing_ids(
    owned: Owned, api: Api
) -> None:
    """Without delete:memories the answer is 403 before any lookup: it tells nothing."""
    plain = await api.register()
    memory = f"/api/memories/{owned.memory['id']}"
    message = f"{memory}/messages/{owned.message['id']}"
    missing = f"/api/memories/{uuid.uuid4()}"
    for foreign_path, missing_path in (
        (memory, missing),
        (message, f"{missing}/messages/{uuid.uuid4()}"),
    ):
        foreign, absent = await plain.delete(foreign_path), await plain.delete(missing_path)
        assert foreign.status == absent.status == 403
        assert foreign.body == absent.body
    assert (await owned.owner.get(message)).status == 200
