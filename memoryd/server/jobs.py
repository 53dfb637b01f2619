"""Runs durable jobs on this node: lease, keep the lease alive, finish or retry.

Several nodes run the same kinds: ``SELECT ... FOR UPDATE SKIP LOCKED`` hands each job to
one of them. A node that dies leaves its jobs ``running`` with a lease that expires; any
node then takes them again. Handlers must therefore be idempotent (each one guards its
side effect with a dedupe key or a state check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from memoryd.aio import wait_event
from memoryd.handlers.jobs import PermanentFailure, RetryLater
from memoryd.storage.jobs import Job, JobStore

log = logging.getLogger("memoryd.jobs")

JobHandler = Callable[[Job], Awaitable[Any]]
MAX_BACKOFF = 300.0


def backoff(attempts: int) -> float:
    """Exponential backoff with full jitter: 1 s, 2 s, 4 s ... up to 5 minutes."""
    return random.uniform(0.5, 1.0) * min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1))


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        *,
        node: str | None = None,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        concurrency: int = 8,
    ) -> None:
        self.store = store
        self.node = node or uuid4().hex[:12]
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self._handlers: dict[str, JobHandler] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def register(self, kind: str, handler: JobHandler) -> None:
        self._handlers[kind] = handler

    def wake(self) -> None:
        """A job was just enqueued here: look now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._handlers:
            self._loop = asyncio.create_task(self._run(), name="memoryd-jobs")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs; cancel running ones (their leases expire, others retry them).
        A job still running ``timeout`` seconds after its cancel (one that swallowed it, or
        waits in a thread) is named in the log and left behind: shutdown never hangs on it."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        for task in list(self._running):
            task.cancel()
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=timeout)
            if pending:
                names = sorted(t.get_name() for t in pending)
                log.warning("jobs still running %g s after their cancel: %s", timeout, names)

    async def _run(self) -> None:
        kinds = list(self._handlers)
        failures = 0  # claims failed in a row (the database is away): log once, back off
        while True:
            free = self.concurrency - len(self._running)
            jobs: list[Job] = []
            wait = self.poll_interval
            if free > 0:
                try:
                    jobs = await self.store.claim(kinds, self.node, self.lease_seconds, free)
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        log.exception("claiming jobs failed; retrying with backoff")
                    else:
                        log.debug("claiming jobs failed again: %r", exc)
                    wait = min(30.0, self.poll_interval * 2.0 ** min(failures, 6))
                else:
                    if failures:
                        log.info("claiming jobs works again after %d failures", failures)
                    failures = 0
            for job in jobs:
                task = asyncio.create_task(self._execute(job), name=f"job-{job.kind}-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if jobs and len(jobs) == free:
                continue  # there may be more due right now
            self._wake.clear()
            await wait_event(self._wake, wait)

    async def _execute(self, job: Job) -> None:
        keeper = asyncio.create_task(self._keep_lease(job))
        try:
            result = await self._handlers[job.kind](job)
        except asyncio.CancelledError:
            raise
        except RetryLater as exc:
            await self.store.retry(job.id, self.node, str(exc), exc.delay)
        except PermanentFailure as exc:
            log.warning("job failed for good", extra={"job": str(job.id), "kind": job.kind})
            await self.store.fail(job.id, self.node, str(exc))
        except Exception as exc:
            log.exception("job attempt failed", extra={"job": str(job.id), "kind": job.kind})
            await self.store.retry(job.id, self.node, repr(exc), backoff(job.attempts))
        else:
            await self.store.finish(job.id, self.node, result)
        finally:
            keeper.cancel()
            self.wake()

    async def _keep_lease(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not await self.store.extend(job.id, self.node, self.lease_seconds):
                log.warning("lost the lease of job %s", job.id)
                return
