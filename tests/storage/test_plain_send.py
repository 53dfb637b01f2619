"""A plain send in one statement: the same invariants as the transaction path (gap-free
per-memory and per-user seqs in commit order, idempotent replay, the transaction path
whenever the memory is not plain)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from memoryd.errors import Conflict
from memoryd.storage.database import Database, Observe
from memoryd.storage.events import EventStore
from memoryd.storage.memories import MemoryStore
from memoryd.storage.messages import (
    MessageStore,
    MessageWindow,
    NewMessage,
    PlainSend,
    SendContext,
    SendPlan,
)
from tests.helpers import Api

pytestmark = pytest.mark.storage

PLAIN = PlainSend(metadata_keys=("memoAnswers",))
PLAIN_STAGES = ["batch_wait", "pool_acquire", "statement"]


class CountingDatabase(Database):
    """Counts the transactions storage opens."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.transactions = 0

    @asynccontextmanager
    async def transaction(
        self, observe: Observe | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        self.transactions += 1
        async with super().transaction(observe) as conn:
            yield conn


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[CountingDatabase]:
    database = await Database.connect(database_url, min_size=1, max_size=8)
    counting = CountingDatabase(database.pool)
    yield counting
    await counting.close()  # the one the stores were built on: it gives back what they keep


async def _user_and_memory(api: Api, db: Database, metadata: Any = None) -> tuple[uuid.UUID, Any]:
    user = await api.register()
    user_id = uuid.UUID(user.user["id"])  # type: ignore[attr-defined]
    fields: dict[str, Any] = {"title": "plain"}
    if metadata is not None:
        fields["metadata"] = metadata
    memory, _ = await MemoryStore(db).create(user_id, fields)
    return user_id, memory


async def test_a_plain_send_is_one_statement_and_no_transaction(
    api: Api, db: CountingDatabase
) -> None:
    user_id, memory = await _user_and_memory(api, db)
    store = MessageStore(db)
    stages: list[str] = []
    store.observe = lambda stage, seconds: stages.append(stage)
    calls: list[SendContext] = []

    async def plan(context: SendContext, new: NewMessage) -> SendPlan:
        calls.append(context)
        return SendPlan(new)

    before = db.transactions
    message, event = await store.create(
        user_id, memory.id, NewMessage("hi", client_msg_id="c-1"), plan=plan, plain=PLAIN
    )
    assert (stages, db.transactions) == (PLAIN_STAGES, before)
    assert calls == []  # storage needed no planner
    assert event is not None and message.seq == 1 and event.data == message
    (logged,) = await EventStore(db).get_after(user_id, event.seq - 1)
    assert logged.seq == event.seq and logged.type == "message.created"
    assert logged.data["seq"] == 1 and logged.data["id"] == str(message.id)
    assert logged.data["createdAt"].startswith(message.created_at.date().isoformat())

    # A replay: the stored message, no seq, no event, no planner, one statement.
    stages.clear()
    again, none = await store.create(
        user_id, memory.id, NewMessage("changed", client_msg_id="c-1"), plan=plan, plain=PLAIN
    )
    assert (stages, db.transactions) == (PLAIN_STAGES, before)
    assert none is None and again == message and calls == []
    other, _ = await MemoryStore(db).create(user_id, {"title": "other"})
    with pytest.raises(Conflict):
        await store.create(user_id, other.id, NewMessage("x", client_msg_id="c-1"), plain=PLAIN)
    row = await db.pool.fetchrow(
        "SELECT last_message_seq, message_count FROM memories WHERE id = $1", memory.id
    )
    assert tuple(row) == (1, 1)


@pytest.mark.parametrize("metadata", [{"memoAnswers": True}, {"memoAnswers": False}, [1]])
async def test_a_memory_a_planner_reads_takes_the_transaction_path(
    api: Api, db: CountingDatabase, metadata: Any
) -> None:
    user_id, memory = await _user_and_memory(api, db, metadata)
    calls: list[SendContext] = []

    async def plan(context: SendContext, new: NewMessage) -> SendPlan:
        calls.append(context)
        return SendPlan(new)

    store = MessageStore(db)
    stages: list[str] = []
    store.observe = lambda stage, seconds: stages.append(stage)
    before = db.transactions
    message, event = await store.create(
        user_id, memory.id, NewMessage("hi"), plan=plan, plain=PLAIN
    )
    assert db.transactions == before + 1 and event is not None and message.seq == 1
    # the one statement found the memory not plain and wrote nothing, then the transaction
    assert stages == [*PLAIN_STAGES, "pool_acquire", "statements", "commit"]
    assert [c.memory_metadata for c in calls] == [metadata]  # planned on the real context


async def test_concurrent_plain_sends_keep_both_seqs_gap_free_in_commit_order(
    api: Api, db: CountingDatabase
) -> None:
    user_id, memory = await _user_and_memory(api, db, {"color": "blue"})
    store = MessageStore(db)
    sent = await asyncio.gather(
        *(
            store.create(user_id, memory.id, NewMessage(f"m{i}", client_msg_id=f"g-{i % 15}"),
                         plain=PLAIN)
            for i in range(30)
        )
    )  # fmt: skip
    created = [m for m, e in sent if e is not None]
    assert len(created) == 15  # each clientMsgId stored once, its twins replayed
    assert sorted(m.seq for m in created) == list(range(1, 16))
    events = await EventStore(db).get_after(user_id, 0)
    messages = [e for e in events if e.type == "message.created"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # events follow commit order, and so do the per-memory seqs they carry
    assert [e.data["seq"] for e in messages] == list(range(1, 16))


async def test_concurrent_plain_sends_of_many_users_share_commits_and_stay_in_order(
    api: Api, db: CountingDatabase
) -> None:
    """Group commit: sends that wait while others are written go together (one round
    trip, one commit); each user's sends still get their seqs in the order they came,
    and one failing send fails alone."""
    users = [await _user_and_memory(api, db) for _ in range(12)]
    store = MessageStore(db)
    before = (store.plain_sends.batches, store.plain_sends.calls)
    sends = [
        store.create(user_id, memory.id, NewMessage(f"{n}", client_msg_id=f"{user_id}-{n}"),
                     plain=PLAIN)
        for n in range(10) for user_id, memory in users
    ]  # fmt: skip
    # One send that cannot be stored (its content breaks a column constraint) rides along.
    bad_user, bad_memory = users[0]
    sends.append(store.create(bad_user, bad_memory.id, NewMessage("x", message_type="x" * 300),
                              plain=PLAIN))  # fmt: skip
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert isinstance(results[-1], asyncpg.PostgresError)
    assert all(not isinstance(r, BaseException) for r in results[:-1])
    batches = store.plain_sends.batches - before[0]
    calls = store.plain_sends.calls - before[1]
    assert calls >= 120 and batches < calls / 2  # most sends shared a commit
    for user_id, memory in users:
        window = MessageWindow(limit=100, sort_order="asc")
        messages, _ = await store.page(user_id, memory.id, window)
        assert [(m.seq, m.content) for m in messages] == [(n + 1, f"{n}") for n in range(10)]
        events = await EventStore(db).get_after(user_id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.data["seq"] for e in events if e.type == "message.created"] == list(range(1, 11))
