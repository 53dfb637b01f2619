"""Device sessions: one row per device of a user, remembering its acknowledged seq."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from memoryd.storage.database import Database


@dataclass(frozen=True)
class Device:
    id: UUID
    user_id: UUID
    acked_seq: int
    created: bool  # True when this connection created it


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self, user_id: UUID, device_id: UUID | None, client: str | None) -> Device:
        """The user's device ``device_id``; created when new (a client may pick its own id).

        An id that belongs to another user is never shared: that caller gets a fresh one.
        """
        if device_id is not None:
            row = await self.db.fetchrow(
                """INSERT INTO devices (id, user_id, client) VALUES ($1, $2, $3)
                   ON CONFLICT (id) DO UPDATE SET last_seen_at = now(),
                       client = coalesce(EXCLUDED.client, devices.client)
                   WHERE devices.user_id = EXCLUDED.user_id
                   RETURNING id, user_id, acked_seq, (xmax = 0) AS created""",
                device_id,
                user_id,
                client,
            )
            if row is not None:
                return Device(row["id"], row["user_id"], row["acked_seq"], row["created"])
        row = await self.db.fetchrow(
            """INSERT INTO devices (user_id, client) VALUES ($1, $2)
               RETURNING id, user_id, acked_seq""",
            user_id,
            client,
        )
        assert row is not None
        return Device(row["id"], row["user_id"], row["acked_seq"], True)

    async def save_acks(self, acks: Sequence[tuple[UUID, UUID, int]]) -> None:
        """Record ``(user_id, device_id, seq)`` acks in one statement; never moves back."""
        if not acks:
            return
        await self.db.execute(
            """UPDATE devices d SET acked_seq = GREATEST(d.acked_seq, a.seq), last_seen_at = now()
               FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS a(user_id, id, seq)
               WHERE d.id = a.id AND d.user_id = a.user_id""",
            [a[0] for a in acks],
            [a[1] for a in acks],
            [a[2] for a in acks],
        )

    async def acked_seq(self, user_id: UUID, device_id: UUID) -> int | None:
        value = await self.db.fetchval(
            "SELECT acked_seq FROM devices WHERE user_id = $1 AND id = $2", user_id, device_id
        )
        return None if value is None else int(value)
