"""The send pipeline as a feature sees it: a registered planner refuses, adjusts the
message, adds a job and an in-transaction step; edit and delete listeners add jobs to
their change's transaction. On a server of its own, so its planner touches no other test."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from memoryd.errors import ValidationFailed
from memoryd.handlers.pipeline import Change, Send
from memoryd.protocol.models import Message
from memoryd.server.keys import SERVICES
from memoryd.storage.database import Database
from memoryd.storage.jobs import NewJob
from tests.conftest import RunningServer, StartServer
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage

KIND = "test.pipeline"  # no runner handles it: the jobs stay pending for the test to read


class SeesItsRow:
    """A storage step: runs on the send's connection, after the row is written."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    async def run(self, conn: asyncpg.Connection, message: Message) -> None:
        self.seen.append(
            await conn.fetchval("SELECT count(*) FROM messages WHERE id = $1", message.id)
        )
        if message.content == "step refuses":
            raise ValidationFailed("refused", details=[{"field": "content", "message": "no"}])


@pytest_asyncio.fixture(scope="module")
async def setup(
    start_server: StartServer, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Api, dict[str, list[Any]]]]:
    node: RunningServer = await start_server()
    calls: dict[str, list[Any]] = {"plan": [], "step": [], "edit": [], "delete": []}

    async def planner(send: Send) -> None:
        if not send.preview:  # the run before storage decides nothing (module doc)
            calls["plan"].append(send.message.content)
        if send.message.content == "refuse me":
            raise ValidationFailed("no", details=[{"field": "content", "message": "refused"}])
        send.message = dataclasses.replace(
            send.message, metadata={**(send.message.metadata or {}), "planned": True}
        )
        send.add_job(lambda message: _job(message, "index"))
        send.add_step(SeesItsRow(calls["step"]))

    async def edited(change: Change) -> None:
        calls["edit"].append(change.message.content)
        change.add_job(await _job(change.message, "reindex"))

    async def deleted(change: Change) -> None:
        calls["delete"].append(change.message.content)
        change.add_job(await _job(change.message, "drop"))
        change.add_step(SeesItsRow(calls["step"]))  # before the row (and its files) go

    pipeline = node.app[SERVICES].pipeline
    pipeline.add_planner("test", planner)
    pipeline.on_edit("test", edited)
    pipeline.on_delete("test", deleted)
    with pytest.raises(ValueError):
        pipeline.add_planner("test", planner)
    database = node.app[SERVICES].store.db
    yield await promote(await Api(http, node.url).register(), database), calls


async def _job(message: Message, what: str) -> NewJob:
    return NewJob(
        kind=KIND,
        payload={"what": what, "messageId": str(message.id)},
        user_id=message.user_id,
        dedupe_key=f"{what}:{message.id}:{uuid.uuid4()}",
    )


async def _jobs(db: Database, message_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT payload->>'what' AS what FROM jobs WHERE kind = $1 AND payload->>'messageId' = $2"
        " ORDER BY created_at",
        KIND,
        message_id,
    )
    return [r["what"] for r in rows]


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


async def test_a_planner_adjusts_adds_a_job_and_a_step_and_never_runs_on_a_replay(
    setup: tuple[Api, dict[str, list[Any]]], db: Database
) -> None:
    user, calls = setup
    memory = await user.post("/api/memories", json={"title": "pipeline"})
    path = f"/api/memories/{memory.body['memory']['id']}/messages"

    sent = await user.post(path, json={"content": "hello", "clientMsgId": "p-1"})
    assert sent.status == 201, sent.body
    message = sent.body["message"]
    assert message["metadata"] == {"planned": True}
    assert await _jobs(db, message["id"]) == ["index"]
    assert calls["step"][-1] == 1  # the step saw the row inside the transaction

    planned = len(calls["plan"])
    again = await user.post(path, json={"content": "hello", "clientMsgId": "p-1"})
    assert again.status == 201 and again.body["message"]["id"] == message["id"]
    assert len(calls["plan"]) == planned  # a replay plans nothing
    assert await _jobs(db, message["id"]) == ["index"]

    for content in ("refuse me", "step refuses"):
        refused = await user.post(path, json={"content": content})
        assert refused.status == 400, refused.body
    listed = await user.get(path)
    assert [m["content"] for m in listed.body["messages"]] == ["hello"]  # nothing else stored
    memory_now = (await user.get(f"/api/memories/{memory.body['memory']['id']}")).body["memory"]
    assert (memory_now["lastMessageSeq"], memory_now["messageCount"]) == (1, 1)

    edited = await user.patch(f"{path}/{message['id']}", json={"content": "hello again"})
    assert edited.status == 200, edited.body
    assert calls["edit"][-1] == "hello again"
    gone = await user.delete(f"{path}/{message['id']}")
    assert gone.status == 204, gone.body
    assert calls["delete"][-1] == "hello again"  # the message as it was
    assert calls["step"][-1] == 1  # the delete's step still saw the row
    assert await _jobs(db, message["id"]) == ["index", "reindex", "drop"]
