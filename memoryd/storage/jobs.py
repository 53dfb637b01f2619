"""Durable jobs: enqueue inside the caller's transaction, lease, finish, retry, cancel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from memoryd.errors import RateLimited
from memoryd.storage.database import Database

_COLUMNS = """id, kind, user_id, dedupe_key, payload, status, attempts, max_attempts,
    run_after, lease_until, leased_by, last_error, result, created_at, updated_at"""


@dataclass(frozen=True)
class Job:
    id: UUID
    kind: str
    user_id: UUID | None
    dedupe_key: str | None
    payload: Any
    status: str
    attempts: int
    max_attempts: int
    run_after: datetime
    lease_until: datetime | None
    leased_by: str | None
    last_error: str | None
    result: Any
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewJob:
    kind: str
    payload: Any
    user_id: UUID | None = None
    dedupe_key: str | None = None
    max_attempts: int = 8
    delay_seconds: float = 0.0
    max_active: int | None = None  # refuse while the user has this many of the kind active
    skip_over_cap: bool = False  # past max_active, add nothing instead of refusing


async def enqueue(conn: asyncpg.Connection, job: NewJob) -> UUID | None:
    """Add a job inside the caller's transaction; None when its dedupe key already exists.

    With ``max_active``, raise `RateLimited` (or, with ``skip_over_cap``, add nothing and
    return None) while the job's user already has that many jobs of its kind pending or
    running. A per-user advisory lock, held until the caller's transaction ends, makes the
    count and the insert one step for concurrent callers.
    """
    if job.max_active is not None and job.user_id is not None:
        try:
            await _check_active(conn, job, job.max_active)
        except RateLimited:
            if job.skip_over_cap:
                return None
            raise
    return await conn.fetchval(  # type: ignore[no-any-return]
        """INSERT INTO jobs (kind, user_id, dedupe_key, payload, max_attempts, run_after)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
           ON CONFLICT (kind, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
           RETURNING id""",
        job.kind,
        job.user_id,
        job.dedupe_key,
        job.payload,
        job.max_attempts,
        job.delay_seconds,
    )


async def _check_active(conn: asyncpg.Connection, job: NewJob, cap: int) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"jobs:{job.kind}:{job.user_id}"
    )
    active = await conn.fetchval(
        """SELECT count(*) FROM jobs
           WHERE kind = $1 AND user_id = $2 AND status IN ('pending', 'running')""",
        job.kind,
        job.user_id,
    )
    if active >= cap:
        raise RateLimited(
            f"at most {cap} may be in progress at once; wait for one to finish",
            retry_after=1.0,
            details={"limit": job.kind, "retryAfter": 1},
        )


def _job(row: asyncpg.Record) -> Job:
    return Job(**dict(row.items()))


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, job: NewJob) -> UUID | None:
        async with self.db.transaction() as conn:
            return await enqueue(conn, job)

    async def claim(
        self, kinds: list[str], node: str, lease_seconds: float, limit: int
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs: pending ones, and running ones whose lease expired
        (their node died). SKIP LOCKED lets every node claim at once without waiting."""
        rows = await self.db.fetch(
            f"""UPDATE jobs SET status = 'running', attempts = attempts + 1,
                    lease_until = now() + make_interval(secs => $3), leased_by = $2,
                    updated_at = now()
                WHERE id IN (
                    SELECT id FROM jobs
                    WHERE kind = ANY($1::text[]) AND run_after <= now()
                      AND (status = 'pending' OR (status = 'running' AND lease_until < now()))
                    ORDER BY run_after LIMIT $4
                    FOR UPDATE SKIP LOCKED)
                RETURNING {_COLUMNS}""",
            kinds,
            node,
            lease_seconds,
            limit,
        )
        return [_job(r) for r in rows]

    async def extend(self, job_id: UUID, node: str, lease_seconds: float) -> bool:
        """Keep a long job's lease; False when the lease was lost (another node took it)."""
        status = await self.db.execute(
            """UPDATE jobs SET lease_until = now() + make_interval(secs => $3)
               WHERE id = $1 AND leased_by = $2 AND status = 'running'""",
            job_id,
            node,
            lease_seconds,
        )
        return status.endswith(" 1")

    async def set_payload(self, job_id: UUID, node: str, payload: Any) -> bool:
        """Replace the payload of a job this node holds: progress that must survive the
        node (e.g. "a send has begun"). False when the lease was lost."""
        status = await self.db.execute(
            """UPDATE jobs SET payload = $3, updated_at = now()
               WHERE id = $1 AND leased_by = $2 AND status = 'running'""",
            job_id,
            node,
            payload,
        )
        return status.endswith(" 1")

    async def finish(self, job_id: UUID, node: str, result: Any = None) -> bool:
        status = await self.db.execute(
            """UPDATE jobs SET status = 'done', result = $3, lease_until = NULL,
                   last_error = NULL, updated_at = now()
               WHERE id = $1 AND leased_by = $2 AND status = 'running'""",
            job_id,
            node,
            result,
        )
        return status.endswith(" 1")

    async def retry(self, job_id: UUID, node: str, error: str, delay_seconds: float) -> None:
        """Back to pending after ``delay_seconds``; failed for good past max_attempts."""
        await self.db.execute(
            """UPDATE jobs SET
                   status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,
                   run_after = now() + make_interval(secs => $4), lease_until = NULL,
                   last_error = $3, updated_at = now()
               WHERE id = $1 AND leased_by = $2 AND status = 'running'""",
            job_id,
            node,
            error[:2000],
            delay_seconds,
        )

    async def fail(self, job_id: UUID, node: str, error: str) -> None:
        await self.db.execute(
            """UPDATE jobs SET status = 'failed', lease_until = NULL, last_error = $3,
                   updated_at = now()
               WHERE id = $1 AND leased_by = $2 AND status = 'running'""",
            job_id,
            node,
            error[:2000],
        )

    async def cancel(self, kind: str, dedupe_key: str, user_id: UUID) -> bool:
        status = await self.db.execute(
            """UPDATE jobs SET status = 'cancelled', lease_until = NULL, updated_at = now()
               WHERE kind = $1 AND dedupe_key = $2 AND user_id = $3
                 AND status IN ('pending', 'running')""",
            kind,
            dedupe_key,
            user_id,
        )
        return status.endswith(" 1")

    async def get(self, job_id: UUID) -> Job | None:
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return _job(row) if row else None

    async def by_key(self, kind: str, dedupe_key: str) -> Job | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM jobs WHERE kind = $1 AND dedupe_key = $2", kind, dedupe_key
        )
        return _job(row) if row else None

    async def redrive(self, kinds: list[str], user_id: UUID) -> int:
        """Failed jobs of this user back to pending (e.g. ``POST /api/sync/force``)."""
        status = await self.db.execute(
            """UPDATE jobs SET status = 'pending', attempts = 0, run_after = now(),
                   updated_at = now()
               WHERE kind = ANY($1::text[]) AND user_id = $2 AND status = 'failed'""",
            kinds,
            user_id,
        )
        return int(status.split()[-1])
