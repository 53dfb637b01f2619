"""The per-user event log: appended in the same transaction as the change it records."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from memoryd.protocol.models import Event
from memoryd.storage.database import Database

_APPEND = """
WITH head AS (
    INSERT INTO user_event_heads (user_id, head_seq) VALUES ($1, 1)
    ON CONFLICT (user_id) DO UPDATE SET head_seq = user_event_heads.head_seq + 1
    RETURNING head_seq
)
INSERT INTO user_events (user_id, seq, type, payload)
SELECT $1, head_seq, $2, $3 FROM head
RETURNING seq, created_at
"""


async def append_event(conn: asyncpg.Connection, user_id: UUID, type_: str, data: Any) -> Event:
    """Append one event inside the caller's transaction.

    The head row is locked until commit, so seqs of one user are gap-free and follow
    commit order: a reader never sees seq N+1 committed before seq N.
    """
    row = await conn.fetchrow(_APPEND, user_id, type_, data)
    assert row is not None
    return Event(seq=row["seq"], type=type_, data=data, created_at=row["created_at"])


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def heads(self, user_ids: list[UUID]) -> dict[UUID, int]:
        """Head seq of each of these users, in one query (the fan-out poller)."""
        rows = await self.db.fetch(
            "SELECT user_id, head_seq FROM user_event_heads WHERE user_id = ANY($1::uuid[])",
            user_ids,
        )
        return {r["user_id"]: int(r["head_seq"]) for r in rows}

    async def positions(self, user_id: UUID) -> tuple[int, int]:
        """``(head_seq, pruned_seq)``: the newest seq, and the newest seq already pruned."""
        row = await self.db.fetchrow(
            "SELECT head_seq, pruned_seq FROM user_event_heads WHERE user_id = $1", user_id
        )
        return (int(row["head_seq"]), int(row["pruned_seq"])) if row else (0, 0)

    async def prune(self, older_than: datetime, batch: int = 10_000) -> int:
        """Delete events created before ``older_than``; remember per user what is gone."""
        deleted = await self.db.fetchval(
            """WITH gone AS (
                   DELETE FROM user_events WHERE ctid IN (
                       SELECT ctid FROM user_events WHERE created_at < $1 LIMIT $2)
                   RETURNING user_id, seq),
               marks AS (
                   UPDATE user_event_heads h SET pruned_seq = GREATEST(h.pruned_seq, g.max_seq)
                   FROM (SELECT user_id, max(seq) AS max_seq FROM gone GROUP BY user_id) g
                   WHERE h.user_id = g.user_id)
               SELECT count(*) FROM gone""",
            older_than,
            batch,
        )
        return int(deleted)

    async def get_after(self, user_id: UUID, after: int, limit: int = 1000) -> list[Event]:
        """Events with ``seq > after`` in order, at most ``limit`` of them."""
        rows = await self.db.fetch(
            """SELECT seq, type, payload, created_at FROM user_events
               WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            user_id,
            after,
            limit,
        )
        return [
            Event(seq=r["seq"], type=r["type"], data=r["payload"], created_at=r["created_at"])
            for r in rows
        ]
