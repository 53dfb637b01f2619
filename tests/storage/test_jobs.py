"""Durable jobs on the real database: dedupe, one runner per job, leases, retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
import pytest_asyncio

from memoryd.handlers.jobs import PermanentFailure, RetryLater
from memoryd.server.jobs import JobRunner
from memoryd.storage.database import Database
from memoryd.storage.jobs import Job, JobStore, NewJob
from memoryd.storage.users import UserStore

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[JobStore]:
    db = await Database.connect(database_url, min_size=1, max_size=6)
    yield JobStore(db)
    await db.close()


def _kind() -> str:
    return f"test-{uuid4().hex[:8]}"  # each test its own kind: runners see only their jobs


async def _wait_status(store: JobStore, job_id: Any, status: str, timeout: float = 10) -> Job:
    async with asyncio.timeout(timeout):
        while True:
            job = await store.get(job_id)
            assert job is not None
            if job.status == status:
                return job
            await asyncio.sleep(0.05)


async def test_a_dedupe_key_makes_one_job(store: JobStore) -> None:
    kind = _kind()
    first = await store.add(NewJob(kind, {"n": 1}, dedupe_key="same"))
    second = await store.add(NewJob(kind, {"n": 2}, dedupe_key="same"))
    assert first is not None and second is None
    job = await store.by_key(kind, "same")
    assert job is not None and job.payload == {"n": 1}


async def test_two_runners_never_run_one_job_twice(store: JobStore) -> None:
    kind = _kind()
    ids = [await store.add(NewJob(kind, {"i": i})) for i in range(40)]
    seen: list[tuple[str, Any]] = []

    def handler(node: str) -> Any:
        async def run(job: Job) -> dict[str, str]:
            seen.append((node, job.id))
            await asyncio.sleep(0.01)
            return {"by": node}

        return run

    runners = [JobRunner(store, node=n, poll_interval=0.05, concurrency=4) for n in ("a", "b")]
    for runner in runners:
        runner.register(kind, handler(runner.node))
        runner.start()
    try:
        for job_id in ids:
            await _wait_status(store, job_id, "done")
    finally:
        for runner in runners:
            await runner.stop()
    ran = [job_id for _, job_id in seen]
    assert sorted(map(str, ran)) == sorted(map(str, ids))  # each exactly once
    assert {node for node, _ in seen} == {"a", "b"}  # and both took a share


async def test_a_dead_runners_job_is_taken_over_after_its_lease(store: JobStore) -> None:
    kind = _kind()
    job_id = await store.add(NewJob(kind, {}))
    claimed = await store.claim([kind], "dead-node", lease_seconds=0.5, limit=1)
    assert [j.id for j in claimed] == [job_id]
    assert await store.claim([kind], "other", lease_seconds=0.5, limit=1) == []  # leased

    runner = JobRunner(store, node="survivor", poll_interval=0.05)
    runner.register(kind, lambda job: asyncio.sleep(0, result={"attempt": job.attempts}))
    runner.start()
    try:
        done = await _wait_status(store, job_id, "done")
    finally:
        await runner.stop()
    assert done.leased_by == "survivor"
    assert done.result == {"attempt": 2}
    # The dead node's late answer changes nothing.
    assert not await store.finish(job_id, "dead-node", {"late": True})


async def test_failures_retry_with_backoff_then_fail_for_good(store: JobStore) -> None:
    kind = _kind()
    job_id = await store.add(NewJob(kind, {}, max_attempts=3))
    attempts = 0

    async def flaky(job: Job) -> None:
        nonlocal attempts
        attempts += 1
        raise RetryLater("busy", delay=0.05)

    runner = JobRunner(store, poll_interval=0.05)
    runner.register(kind, flaky)
    runner.start()
    try:
        failed = await _wait_status(store, job_id, "failed")
    finally:
        await runner.stop()
    assert attempts == 3
    assert failed.attempts == 3 and failed.last_error == "busy"


async def test_a_permanent_failure_is_not_retried(store: JobStore) -> None:
    kind = _kind()
    job_id = await store.add(NewJob(kind, {}))

    async def broken(job: Job) -> None:
        raise PermanentFailure("bad input")

    runner = JobRunner(store, poll_interval=0.05)
    runner.register(kind, broken)
    runner.start()
    try:
        failed = await _wait_status(store, job_id, "failed")
    finally:
        await runner.stop()
    assert failed.attempts == 1 and failed.last_error == "bad input"


async def test_cancel_and_redrive_are_scoped_by_user(store: JobStore) -> None:
    users = UserStore(store.db)
    owner, other = [
        await users.create(
            email=f"jobs-{uuid4().hex[:8]}@example.com",
            password_hash=None,
            first_name="J",
            last_name="O",
        )
        for _ in range(2)
    ]
    kind = _kind()
    job_id = await store.add(NewJob(kind, {}, user_id=owner.id, dedupe_key="k"))
    assert await store.cancel(kind, "k", other.id) is False
    assert await store.cancel(kind, "k", owner.id) is True
    cancelled = await store.get(job_id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await store.claim([kind], "n", 5, 1) == []  # a cancelled job never runs

    failing = await store.add(NewJob(kind, {}, user_id=owner.id))
    [claimed] = await store.claim([kind], "n", 5, 1)
    assert claimed.id == failing
    await store.fail(failing, "n", "gave up")
    assert await store.redrive([kind], other.id) == 0
    assert await store.redrive([kind], owner.id) == 1
    again = await store.get(failing)
    assert again is not None and again.status == "pending" and again.attempts == 0


async def test_stopping_never_hangs_on_a_job_that_ignores_its_cancel(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    kind = _kind()
    job_id = await store.add(NewJob(kind, {}))
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn(job: Job) -> None:
        started.set()
        while not release.is_set():  # swallows every cancel, as a hung thread would
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    runner = JobRunner(store, poll_interval=0.05)
    runner.register(kind, stubborn)
    runner.start()
    await asyncio.wait_for(started.wait(), 10)
    async with asyncio.timeout(5):
        await runner.stop(timeout=0.2)
    assert f"job-{kind}-{job_id}" in caplog.text  # the log names the job left behind
    release.set()
    await _wait_status(store, job_id, "done")


async def test_closing_the_pool_cuts_off_a_connection_never_given_back(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    held = await db.pool.acquire()  # a holder that hangs: never released
    async with asyncio.timeout(5):
        await db.close(timeout=0.2)
    with pytest.raises(asyncpg.InterfaceError):  # its holder finds it gone
        await held.fetchval("SELECT 1")
    assert "1 connection(s) in use" in caplog.text
