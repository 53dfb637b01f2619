"""Every REST change appends exactly one event per change to the user's log, gap-free."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from memoryd.protocol.models import Event
from memoryd.storage.database import Database
from memoryd.storage.events import EventStore
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


async def _events(db: Database, client: Api, after: int = 0) -> list[Event]:
    user_id = uuid.UUID(client.user["id"])  # type: ignore[attr-defined]
    return await EventStore(db).get_after(user_id, after)


def _assert_gap_free(events: list[Event], first: int = 1) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))


async def test_each_change_appends_one_event_in_order(api: Api, db: Database) -> None:
    user = await promote(await api.register(), db)
    assert await _events(db, user) == []  # registering (and its default categories) logs none

    memory = (await user.post("/api/memories", json={"title": "log"})).body["memory"]
    path = f"/api/memories/{memory['id']}/messages"
    first = (await user.post(path, json={"content": "one"})).body["message"]
    second = (await user.post(path, json={"content": "two"})).body["message"]
    edited = await user.patch(f"{path}/{first['id']}", json={"content": "one!"})
    assert edited.status == 200
    assert (await user.delete(f"{path}/{second['id']}")).status == 204

    events = await _events(db, user)
    assert [e.type for e in events] == [
        "memory.created",
        "message.created",
        "message.created",
        "message.updated",
        "message.deleted",
    ]
    _assert_gap_free(events)
    assert events[0].data == memory
    assert events[1].data == first
    assert events[2].data == second
    assert events[3].data == edited.body["message"]
    assert events[4].data == {"id": second["id"], "memoryId": memory["id"]}
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    assert (await EventStore(db).positions(uuid.UUID(user.user["id"])))[0] == 5

    # Reads and refused changes log nothing.
    await user.get(f"/api/memories/{memory['id']}")
    await user.get(path)
    assert (await user.post(path, json={"content": ""})).status == 400
    assert (await user.patch(f"{path}/{uuid.uuid4()}", json={"content": "x"})).status == 404
    assert (await user.delete(f"/api/memories/{uuid.uuid4()}")).status == 404
    assert len(await _events(db, user)) == 5

    # get_after reads from a position, as a device resuming does.
    assert [e.seq for e in await _events(db, user, after=3)] == [4, 5]
    assert await _events(db, user, after=5) == []


async def test_memory_and_category_changes_are_logged(api: Api, db: Database) -> None:
    user = await promote(await api.register(), db)
    category = (await user.post("/api/categories", json={"name": "Log"})).body["category"]
    renamed = await user.patch(f"/api/categories/{category['id']}", json={"name": "Logs"})
    assert renamed.status == 200
    memory = (
        await user.post("/api/memories", json={"title": "m", "categoryId": category["id"]})
    ).body["memory"]
    fav = await user.patch(f"/api/memories/{memory['id']}", json={"isFavorite": True})
    assert fav.status == 200
    assert (await user.delete(f"/api/categories/{category['id']}")).status == 204
    assert (await user.delete(f"/api/memories/{memory['id']}")).status == 204

    events = await _events(db, user)
    _assert_gap_free(events)
    assert [e.type for e in events] == [
        "category.created",
        "category.updated",
        "memory.created",
        "memory.updated",
        "memory.updated",  # uncategorised by the category's deletion
        "category.deleted",
        "memory.deleted",
    ]
    assert events[1].data["name"] == "Logs"
    assert events[3].data["isFavorite"] is True
    assert events[4].data["id"] == memory["id"]
    assert events[4].data["categoryId"] is None
    assert events[5].data == {"id": category["id"], "memoryId": None}
    assert events[6].data == {"id": memory["id"], "memoryId": None}


async def test_an_idempotent_replay_appends_no_event(api: Api, db: Database) -> None:
    user = await api.register()
    memory = (await user.post("/api/memories", json={})).body["memory"]
    path = f"/api/memories/{memory['id']}/messages"
    body = {"content": "once", "clientMsgId": "replay-1"}
    assert (await user.post(path, json=body)).status == 201
    replay = await user.post(path, json=body)
    assert replay.header("Idempotent-Replayed") == "true"
    by_header = await user.post(
        path, json={"content": "once"}, headers={"Idempotency-Key": "replay-1"}
    )
    assert by_header.header("Idempotent-Replayed") == "true"
    await asyncio.gather(*(user.post(path, json=body) for _ in range(5)))

    events = await _events(db, user)
    assert [e.type for e in events] == ["memory.created", "message.created"]
    _assert_gap_free(events)


async def test_concurrent_changes_by_one_user_get_unique_gap_free_seqs(
    api: Api, db: Database
) -> None:
    user = await api.register()
    memories = await asyncio.gather(
        *(user.post("/api/memories", json={"title": f"m{i}"}) for i in range(5))
    )
    ids = [m.body["memory"]["id"] for m in memories]
    sends = [
        user.post(f"/api/memories/{ids[i % 5]}/messages", json={"content": f"c{i}"})
        for i in range(25)
    ]
    updates = [user.patch(f"/api/memories/{i}", json={"isFavorite": True}) for i in ids]
    creates = [user.post("/api/categories", json={"name": f"cat {i}"}) for i in range(5)]
    responses = await asyncio.gather(*sends, *updates, *creates)
    assert all(r.status in (200, 201) for r in responses), [r.body for r in responses]

    events = await _events(db, user)
    assert len(events) == 5 + 25 + 5 + 5
    _assert_gap_free(events)
    kinds = [e.type for e in events]
    assert kinds.count("memory.created") == 5
    assert kinds.count("message.created") == 25
    assert kinds.count("memory.updated") == 5
    assert kinds.count("category.created") == 5
    # Each memory's messages appear in the log in their per-memory seq order.
    for memory_id in ids:
        seqs = [
            e.data["seq"]
            for e in events
            if e.type == "message.created" and e.data["memoryId"] == memory_id
        ]
        assert seqs == [1, 2, 3, 4, 5]
    assert (await EventStore(db).positions(uuid.UUID(user.user["id"])))[0] == 40


async def test_each_user_has_a_log_of_their_own(api: Api, db: Database) -> None:
    alice, bob = await api.register(), await api.register()
    await asyncio.gather(
        *(alice.post("/api/memories", json={"title": f"a{i}"}) for i in range(3)),
        *(bob.post("/api/memories", json={"title": f"b{i}"}) for i in range(2)),
    )
    alices, bobs = await _events(db, alice), await _events(db, bob)
    _assert_gap_free(alices)
    _assert_gap_free(bobs)
    assert sorted(e.data["title"] for e in alices) == ["a0", "a1", "a2"]
    assert sorted(e.data["title"] for e in bobs) == ["b0", "b1"]
    assert {e.data["userId"] for e in alices} == {alice.user["id"]}  # type: ignore[attr-defined]
    assert {e.data["userId"] for e in bobs} == {bob.user["id"]}  # type: ignore[attr-defined]

    # Bob failing on Alice's rows leaves both logs as they were.
    target = alices[0].data["id"]
    assert (await bob.patch(f"/api/memories/{target}", json={"title": "x"})).status == 404
    assert (await bob.post(f"/api/memories/{target}/messages", json={"content": "x"})).status == 404
    assert len(await _events(db, alice)) == 3
    assert len(await _events(db, bob)) == 2
