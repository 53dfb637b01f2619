"""/api/memories/{id}/messages: sends (idempotent, gap-free seq), history, edit, delete."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import RunningServer
from tests.files.conftest import upload
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="module")
async def someone(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    """One user shared by the tests that each work in a memory of their own."""
    return await Api(http, server.url).register()


@pytest_asyncio.fixture(scope="module")
async def premium(server: RunningServer, http: aiohttp.ClientSession, db: Database) -> Api:
    return await promote(await Api(http, server.url).register(), db)


async def _memory(client: Api, **fields: Any) -> str:
    resp = await client.post("/api/memories", json={"title": "thread", **fields})
    assert resp.status == 201, resp.body
    return resp.body["memory"]["id"]  # type: ignore[no-any-return]


async def _send(client: Api, memory_id: str, content: str = "hello", **fields: Any) -> Any:
    resp = await client.post(
        f"/api/memories/{memory_id}/messages", json={"content": content, **fields}
    )
    assert resp.status == 201, resp.body
    return resp.body["message"]


def _fields_in_error(body: Any) -> set[str | None]:
    return {d["field"] for d in body["error"]["details"]}


# -- send -------------------------------------------------------------------------------


async def test_send_returns_201_and_numbers_messages_per_memory(someone: Api) -> None:
    memory_id = await _memory(someone)
    other_id = await _memory(someone)
    resp = await someone.post(
        f"/api/memories/{memory_id}/messages",
        json={"content": "first", "metadata": {"k": [1]}},
    )
    assert resp.status == 201, resp.body
    assert set(resp.body) == {"message"}
    assert resp.header("Idempotent-Replayed") is None
    first = resp.body["message"]
    assert first["memoryId"] == memory_id
    assert first["userId"] == someone.user["id"]  # type: ignore[attr-defined]
    assert first["seq"] == 1
    assert first["content"] == "first"
    assert first["messageType"] == "text"
    assert first["metadata"] == {"k": [1]}
    assert first["attachments"] == []
    assert first["isAiGenerated"] is False
    assert first["parentId"] is None
    assert first["clientMsgId"] is None
    assert first["status"] == "sent"

    assert (await _send(someone, memory_id, "second"))["seq"] == 2
    assert (await _send(someone, other_id, "elsewhere"))["seq"] == 1
    assert (await _send(someone, memory_id, "third"))["seq"] == 3

    memory = (await someone.get(f"/api/memories/{memory_id}")).body["memory"]
    assert (memory["lastMessageSeq"], memory["messageCount"]) == (3, 3)
    got = await someone.get(f"/api/memories/{memory_id}/messages/{first['id']}")
    assert got.status == 200
    assert got.body == {"message": first}


async def test_content_limits(someone: Api) -> None:
    memory_id = await _memory(someone)
    assert (await _send(someone, memory_id, "x"))["content"] == "x"
    longest = await _send(someone, memory_id, "é" * 10_000)
    assert len(longest["content"]) == 10_000
    for content in ("", "x" * 10_001):
        resp = await someone.post(f"/api/memories/{memory_id}/messages", json={"content": content})
        assert resp.status == 400
        assert _fields_in_error(resp.body) == {"content"}
    missing = await someone.post(f"/api/memories/{memory_id}/messages", json={})
    assert missing.status == 400
    assert _fields_in_error(missing.body) == {"content"}
    memory = (await someone.get(f"/api/memories/{memory_id}")).body["memory"]
    assert (memory["lastMessageSeq"], memory["messageCount"]) == (2, 2)


async def test_message_types(someone: Api) -> None:
    memory_id = await _memory(someone)
    for kind in ("text", "voice", "image", "document"):
        assert (await _send(someone, memory_id, messageType=kind))["messageType"] == kind
    bad_kinds: tuple[object, ...] = ("video", "TEXT", "", 3)
    for bad in bad_kinds:
        resp = await someone.post(
            f"/api/memories/{memory_id}/messages", json={"content": "x", "messageType": bad}
        )
        assert resp.status == 400, bad
        assert _fields_in_error(resp.body) == {"messageType"}


async def test_attachments(someone: Api) -> None:
    memory_id = await _memory(someone)
    # attachments are the sender's own unattached files (tests/files covers the rules)
    five = [(await upload(someone, f"file {i}".encode())).body["file"]["id"] for i in range(5)]
    assert (await _send(someone, memory_id, attachments=five))["attachments"] == five
    path = f"/api/memories/{memory_id}/messages"
    six = await someone.post(path, json={"content": "x", "attachments": [*five, five[0]]})
    assert six.status == 400
    assert _fields_in_error(six.body) == {"attachments"}
    bad = await someone.post(path, json={"content": "x", "attachments": [five[0], "file-1"]})
    assert bad.status == 400
    assert _fields_in_error(bad.body) == {"attachments[1]"}
    not_list = await someone.post(path, json={"content": "x", "attachments": five[0]})
    assert not_list.status == 400


async def test_parent_must_be_a_message_of_the_same_memory(someone: Api) -> None:
    memory_id = await _memory(someone)
    other_id = await _memory(someone)
    parent = await _send(someone, memory_id, "parent")
    elsewhere = await _send(someone, other_id, "elsewhere")

    reply = await _send(someone, memory_id, "reply", parentId=parent["id"])
    assert reply["parentId"] == parent["id"]
    assert reply["seq"] == 2

    path = f"/api/memories/{memory_id}/messages"
    for parent_id in (elsewhere["id"], str(uuid.uuid4()), "nope"):
        resp = await someone.post(path, json={"content": "x", "parentId": parent_id})
        assert resp.status == 400, parent_id
        assert _fields_in_error(resp.body) == {"parentId"}
    # A refused send takes no seq.
    assert (await _send(someone, memory_id, "next"))["seq"] == 3


async def test_unknown_fields_and_unknown_memory(someone: Api) -> None:
    memory_id = await _memory(someone)
    resp = await someone.post(
        f"/api/memories/{memory_id}/messages", json={"content": "x", "seq": 99}
    )
    assert resp.status == 400
    assert _fields_in_error(resp.body) == {"seq"}
    for target in (str(uuid.uuid4()), "not-a-uuid"):
        missing = await someone.post(f"/api/memories/{target}/messages", json={"content": "x"})
        assert missing.status == 404
        assert missing.error_code == "not_found"


# -- idempotency ------------------------------------------------------------------------


async def test_same_client_msg_id_twice_stores_one_message(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    body = {"content": "once", "clientMsgId": "c-1"}
    first = await someone.post(path, json=body)
    second = await someone.post(path, json={**body, "content": "changed?"})
    assert (first.status, second.status) == (201, 201)
    assert first.header("Idempotent-Replayed") is None
    assert second.header("Idempotent-Replayed") == "true"
    assert second.body == first.body
    assert second.body["message"]["content"] == "once"
    assert first.body["message"]["clientMsgId"] == "c-1"

    listed = await someone.get(path)
    assert [m["id"] for m in listed.body["messages"]] == [first.body["message"]["id"]]
    memory = (await someone.get(f"/api/memories/{memory_id}")).body["memory"]
    assert (memory["lastMessageSeq"], memory["messageCount"]) == (1, 1)
    assert (await _send(someone, memory_id, "next"))["seq"] == 2


async def test_idempotency_key_header(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = await someone.post(path, json={"content": "hi"}, headers=key)
    second = await someone.post(path, json={"content": "hi"}, headers=key)
    assert (first.status, second.status) == (201, 201)
    assert first.body["message"]["clientMsgId"] == key["Idempotency-Key"]
    assert second.body["message"]["id"] == first.body["message"]["id"]
    assert second.header("Idempotent-Replayed") == "true"
    # The body's clientMsgId, when given, names the same thing.
    third = await someone.post(path, json={"content": "hi", "clientMsgId": key["Idempotency-Key"]})
    assert third.body["message"]["id"] == first.body["message"]["id"]
    too_long = await someone.post(
        path, json={"content": "x"}, headers={"Idempotency-Key": "k" * 101}
    )
    assert too_long.status == 400
    assert _fields_in_error(too_long.body) == {"clientMsgId"}
    assert (await someone.get(path)).body["pagination"]["total"] == 1


async def test_client_msg_id_of_another_memory_is_a_conflict(someone: Api) -> None:
    first_memory = await _memory(someone)
    second_memory = await _memory(someone)
    await _send(someone, first_memory, clientMsgId="shared-id")
    resp = await someone.post(
        f"/api/memories/{second_memory}/messages", json={"content": "x", "clientMsgId": "shared-id"}
    )
    assert resp.status == 409
    assert resp.error_code == "conflict"
    assert (await someone.get(f"/api/memories/{second_memory}/messages")).body["messages"] == []


async def test_client_msg_ids_are_per_user(api: Api, someone: Api) -> None:
    other = await api.register()
    mine, theirs = await _memory(someone), await _memory(other)
    a = await _send(someone, mine, "mine", clientMsgId="same-everywhere")
    b = await _send(other, theirs, "theirs", clientMsgId="same-everywhere")
    assert a["id"] != b["id"]
    assert (a["content"], b["content"]) == ("mine", "theirs")


async def test_concurrent_sends_with_one_client_msg_id_store_one_message(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    responses = await asyncio.gather(
        *(
            someone.post(path, json={"content": f"attempt {i}", "clientMsgId": "race"})
            for i in range(10)
        )
    )
    assert {r.status for r in responses} == {201}
    ids = {r.body["message"]["id"] for r in responses}
    assert len(ids) == 1
    replayed = [r for r in responses if r.header("Idempotent-Replayed") == "true"]
    assert len(replayed) == 9
    assert {r.body["message"]["seq"] for r in responses} == {1}

    listed = (await someone.get(path)).body
    assert [m["id"] for m in listed["messages"]] == list(ids)
    memory = (await someone.get(f"/api/memories/{memory_id}")).body["memory"]
    assert (memory["lastMessageSeq"], memory["messageCount"]) == (1, 1)


async def test_seq_is_gap_free_under_concurrent_senders(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    responses = await asyncio.gather(
        *(someone.post(path, json={"content": f"m{i}"}) for i in range(30))
    )
    assert [r.status for r in responses] == [201] * 30
    seqs = sorted(r.body["message"]["seq"] for r in responses)
    assert seqs == list(range(1, 31))

    listed = await someone.get(path, params={"limit": 100, "sortOrder": "asc"})
    assert [m["seq"] for m in listed.body["messages"]] == list(range(1, 31))
    by_seq = {r.body["message"]["seq"]: r.body["message"]["content"] for r in responses}
    assert [m["content"] for m in listed.body["messages"]] == [by_seq[s] for s in range(1, 31)]
    memory = (await someone.get(f"/api/memories/{memory_id}")).body["memory"]
    assert (memory["lastMessageSeq"], memory["messageCount"]) == (30, 30)


# -- history ----------------------------------------------------------------------------


async def test_list_pages_newest_first_by_default(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    empty = await someone.get(path)
    assert empty.body == {
        "messages": [],
        "pagination": {"page": 1, "limit": 50, "total": 0, "totalPages": 0},
    }
    for i in range(1, 6):
        await _send(someone, memory_id, f"m{i}")

    newest = await someone.get(path)
    assert [m["content"] for m in newest.body["messages"]] == ["m5", "m4", "m3", "m2", "m1"]
    oldest = await someone.get(path, params={"sortOrder": "asc"})
    assert [m["content"] for m in oldest.body["messages"]] == ["m1", "m2", "m3", "m4", "m5"]

    pages = []
    for page in (1, 2, 3):
        resp = await someone.get(path, params={"page": page, "limit": 2})
        assert resp.body["pagination"] == {"page": page, "limit": 2, "total": 5, "totalPages": 3}
        pages.append([m["seq"] for m in resp.body["messages"]])
    assert pages == [[5, 4], [3, 2], [1]]

    for params in ({"limit": 0}, {"limit": 101}, {"page": 0}, {"sortOrder": "sideways"}):
        bad = await someone.get(path, params=params)
        assert bad.status == 400, params
        assert bad.error_code == "validation_failed"


async def test_before_and_after_take_iso_timestamps(someone: Api) -> None:
    memory_id = await _memory(someone)
    path = f"/api/memories/{memory_id}/messages"
    sent = [await _send(someone, memory_id, f"m{i}") for i in range(1, 5)]
    stamps = [m["createdAt"] for m in sent]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 4

    async def contents(**params: Any) -> list[str]:
        resp = await someone.get(path, params={"sortOrder": "asc", **params})
        assert resp.status == 200, resp.body
        return [m["content"] for m in resp.body["messages"]]

    assert await contents(before=stamps[2]) == ["m1", "m2"]
    assert await contents(after=stamps[1]) == ["m3", "m4"]
    assert await contents(after=stamps[0], before=stamps[3]) == ["m2", "m3"]
    assert await contents(after=stamps[3]) == []
    assert await contents(before="2000-01-01T00:00:00Z") == []
    assert await contents(after="2000-01-01T00:00:00+00:00") == ["m1", "m2", "m3", "m4"]
    window = await someone.get(path, params={"after": stamps[0], "limit": 1})
    assert window.body["pagination"]["total"] == 3
    assert [m["content"] for m in window.body["messages"]] == ["m4"]

    bad = await someone.get(path, params={"before": "yesterday"})
    assert bad.status == 400
    assert _fields_in_error(bad.body) == {"before"}


# -- edit and delete --------------------------------------------------------------------


async def test_edit_content_and_metadata(someone: Api) -> None:
    memory_id = await _memory(someone)
    message = await _send(someone, memory_id, "tpyo", metadata={"a": 1})
    path = f"/api/memories/{memory_id}/messages/{message['id']}"

    resp = await someone.patch(path, json={"content": "typo"})
    assert resp.status == 200, resp.body
    edited = resp.body["message"]
    assert edited["content"] == "typo"
    assert edited["metadata"] == {"a": 1}
    assert (edited["id"], edited["seq"], edited["createdAt"]) == (
        message["id"],
        message["seq"],
        message["createdAt"],
    )
    assert edited["updatedAt"] > message["updatedAt"]
    assert (await someone.get(path)).body["message"] == edited

    meta = await someone.patch(path, json={"metadata": None})
    assert meta.body["message"]["metadata"] is None
    assert meta.body["message"]["content"] == "typo"

    for body, field in (
        ({"content": ""}, "content"),
        ({"content": "x" * 10_001}, "content"),
        ({"messageType": "voice"}, "messageType"),
        ({"seq": 7}, "seq"),
    ):
        bad = await someone.patch(path, json=body)
        assert bad.status == 400, body
        assert _fields_in_error(bad.body) == {field}
    empty = await someone.patch(path, json={})
    assert empty.status == 400


async def test_delete_needs_the_delete_permission(someone: Api, premium: Api) -> None:
    memory_id = await _memory(someone)
    message = await _send(someone, memory_id)
    denied = await someone.delete(f"/api/memories/{memory_id}/messages/{message['id']}")
    assert denied.status == 403
    assert denied.error_code == "forbidden"
    assert (await someone.get(f"/api/memories/{memory_id}/messages")).body["pagination"][
        "total"
    ] == 1


async def test_delete_is_204_then_404(premium: Api) -> None:
    memory_id = await _memory(premium)
    first = await _send(premium, memory_id, "one")
    second = await _send(premium, memory_id, "two")
    path = f"/api/memories/{memory_id}/messages/{first['id']}"

    resp = await premium.delete(path)
    assert resp.status == 204
    assert resp.body is None
    for again in (
        await premium.get(path),
        await premium.delete(path),
        await premium.patch(path, json={"content": "x"}),
    ):
        assert again.status == 404
        assert again.error_code == "not_found"

    listed = await premium.get(f"/api/memories/{memory_id}/messages")
    assert [m["id"] for m in listed.body["messages"]] == [second["id"]]
    memory = (await premium.get(f"/api/memories/{memory_id}")).body["memory"]
    assert memory["messageCount"] == 1
    assert memory["lastMessageSeq"] == 2  # seqs are never reused
    assert (await _send(premium, memory_id, "three"))["seq"] == 3


async def test_a_message_under_the_wrong_memory_is_404(premium: Api) -> None:
    right, wrong = await _memory(premium), await _memory(premium)
    message = await _send(premium, right, "original")
    path = f"/api/memories/{wrong}/messages/{message['id']}"
    for resp in (
        await premium.get(path),
        await premium.patch(path, json={"content": "hijacked"}),
        await premium.delete(path),
    ):
        assert resp.status == 404, resp.body
        assert resp.error_code == "not_found"
    still = await premium.get(f"/api/memories/{right}/messages/{message['id']}")
    assert still.status == 200
    assert still.body["message"] == message


@pytest.mark.parametrize("message_id", [str(uuid.uuid4()), "nope"])
async def test_unknown_or_malformed_message_id_is_404(premium: Api, message_id: str) -> None:
    memory_id = await _memory(premium)
    path = f"/api/memories/{memory_id}/messages/{message_id}"
    for resp in (
        await premium.get(path),
        await premium.patch(path, json={"content": "x"}),
        await premium.delete(path),
    ):
        assert resp.status == 404
        assert resp.error_code == "not_found"


async def test_messages_of_another_users_memory_are_404(someone: Api, premium: Api) -> None:
    memory_id = await _memory(someone)
    message = await _send(someone, memory_id, "secret")
    base = f"/api/memories/{memory_id}/messages"
    one = f"{base}/{message['id']}"
    for resp in (
        await premium.get(base),
        await premium.post(base, json={"content": "intrusion"}),
        await premium.post(base, json={"content": "intrusion", "clientMsgId": "x-user"}),
        await premium.get(one),
        await premium.patch(one, json={"content": "changed"}),
        await premium.delete(one),
    ):
        assert resp.status == 404, resp.body
        assert resp.error_code == "not_found"
        assert "secret" not in str(resp.body)
    listed = await someone.get(base)
    assert listed.body["messages"] == [message]


async def test_concurrent_deletes_and_replies_never_deadlock(premium: Api) -> None:
    """Deleting messages while their memory goes, or a parent while replies to it arrive."""
    for _ in range(3):
        memory_id = await _memory(premium)
        base = f"/api/memories/{memory_id}/messages"
        ids = [(await _send(premium, memory_id, f"m{i}"))["id"] for i in range(5)]
        results = await asyncio.gather(
            premium.delete(f"/api/memories/{memory_id}"),
            *(premium.delete(f"{base}/{i}") for i in ids),
        )
        assert results[0].status == 204, results[0].body
        assert {r.status for r in results[1:]} <= {204, 404}, [r.body for r in results]
        assert (await premium.get(f"/api/memories/{memory_id}")).status == 404

        memory_id = await _memory(premium)
        base = f"/api/memories/{memory_id}/messages"
        parent = await _send(premium, memory_id, "parent")
        deleted, *replies = await asyncio.gather(
            premium.delete(f"{base}/{parent['id']}"),
            *(
                premium.post(base, json={"content": "re", "parentId": parent["id"]})
                for _ in range(4)
            ),
        )
        assert deleted.status == 204, deleted.body
        assert {r.status for r in replies} <= {201, 400}, [r.body for r in replies]
        stored = (await premium.get(base)).body["messages"]
        assert len(stored) == sum(r.status == 201 for r in replies)
        assert all(m["parentId"] is None for m in stored)  # the parent is gone
        memory = (await premium.get(f"/api/memories/{memory_id}")).body["memory"]
        assert memory["messageCount"] == len(stored)
