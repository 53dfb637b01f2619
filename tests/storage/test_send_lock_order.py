"""Concurrent writes of one user never deadlock: a plain send (one statement), a send on
the transaction path and an edit take the user's rows in the same order (memory row,
then vocabulary and embedding queue, then the event head), with the search triggers on
and embeddings queued, as on a server with an embedder."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from memoryd.storage.events import EventStore
from memoryd.storage.memories import MemoryStore
from memoryd.storage.messages import MessageStore, NewMessage, PlainSend, SendContext, SendPlan
from memoryd.storage.users import UserStore

pytestmark = pytest.mark.storage

PLAIN = PlainSend()
ROUNDS = 6
PER_ROUND = 24


@pytest_asyncio.fixture(scope="module")
async def db(own_database: str) -> AsyncIterator[Database]:
    database = await Database.connect(own_database, min_size=4, max_size=24)
    await database.execute("UPDATE search_state SET embed = TRUE")  # queue embeddings
    yield database
    await database.close()


async def _plan(context: SendContext, new: NewMessage) -> SendPlan:
    return SendPlan(new)


async def test_plain_and_transaction_sends_and_edits_of_one_user_never_deadlock(
    db: Database,
) -> None:
    user = await UserStore(db).create(
        email=f"locks-{uuid.uuid4().hex[:8]}@example.com", password_hash=None,
        first_name=None, last_name=None,
    )  # fmt: skip
    memories = [(await MemoryStore(db).create(user.id, {"title": f"m{i}"}))[0] for i in range(3)]
    store = MessageStore(db)
    first, _ = await store.create(user.id, memories[0].id, NewMessage("seed words"), plan=_plan)
    word = 0

    def text() -> str:
        nonlocal word
        word += 7  # new words each time, shared between concurrent writes: vocabulary rows
        return " ".join(f"w{(word + k) % 40:02d}x" for k in range(6))

    stored = 1
    for _ in range(ROUNDS):
        writes = []
        for i in range(PER_ROUND):
            memory = memories[i % 3]
            if i % 3 == 0:  # plain: one statement
                writes.append(store.create(user.id, memory.id, NewMessage(text()), plain=PLAIN))
            elif i % 3 == 1:  # a reply: the transaction path
                parent = first.id if memory.id == first.memory_id else None
                new = NewMessage(text(), parent_id=parent)
                writes.append(store.create(user.id, memory.id, new, plan=_plan))
            else:
                writes.append(store.update(user.id, first.id, {"content": text()}))
        results = await asyncio.gather(*writes)
        stored += sum(1 for r, i in zip(results, range(PER_ROUND), strict=True) if i % 3 != 2)
    events = await EventStore(db).get_after(user.id, 0, limit=10_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    created = [e for e in events if e.type == "message.created"]
    assert len(created) == stored
