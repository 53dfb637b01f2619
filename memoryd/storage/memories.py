"""Memories (threads) of one user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from memoryd.errors import ValidationFailed
from memoryd.protocol.models import Deleted, Event, Memory, ReadMarker
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.rows import MEMORY_COLUMNS, set_clause, to_model, to_models

SORT_COLUMNS = {"created_at": "created_at", "updated_at": "updated_at", "title": "lower(title)"}


@dataclass(frozen=True)
class MemoryFilter:
    category_id: UUID | None = None
    search: str | None = None
    search_ids: tuple[UUID, ...] = ()  # also match these (their messages matched `search`)
    tags: tuple[str, ...] = ()
    is_favorite: bool | None = None
    is_archived: bool | None = None
    sort_by: str = "updated_at"
    sort_order: str = "desc"
    page: int = 1
    limit: int = 20


async def _check_category(conn: asyncpg.Connection, user_id: UUID, category_id: Any) -> None:
    if category_id is None:
        return
    owned = await conn.fetchval(
        "SELECT 1 FROM memory_categories WHERE user_id = $1 AND id = $2", user_id, category_id
    )
    if not owned:
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "categoryId", "message": "no such category"}],
        )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MemoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, user_id: UUID, f: MemoryFilter) -> tuple[list[Memory], int]:
        where = ["user_id = $1"]
        args: list[Any] = [user_id]

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if f.category_id is not None:
            where.append(f"category_id = {param(f.category_id)}")
        if f.search:
            pattern = param(f"%{_escape_like(f.search)}%")
            # Content is searched by its string and number values: its JSON text would also
            # match keys ("text" found in every {"text": ...}) and escaped quotes.
            matched = param(list(f.search_ids))
            where.append(
                f"(id = ANY({matched}::uuid[])"
                f" OR title ILIKE {pattern} OR description ILIKE {pattern}"
                f" OR array_to_string(tags, ' ') ILIKE {pattern}"
                " OR EXISTS (SELECT 1 FROM jsonb_path_query(content, 'strict $.**') AS v"
                "   WHERE jsonb_typeof(v) IN ('string', 'number')"
                f"   AND v #>> '{{}}' ILIKE {pattern}))"
            )
        if f.tags:
            where.append(f"tags @> {param(list(f.tags))}::text[]")
        if f.is_favorite is not None:
            where.append(f"is_favorite = {param(f.is_favorite)}")
        if f.is_archived is not None:
            where.append(f"is_archived = {param(f.is_archived)}")
        order = f"{SORT_COLUMNS[f.sort_by]} {'ASC' if f.sort_order == 'asc' else 'DESC'}"
        condition = " AND ".join(where)
        total = await self.db.fetchval(f"SELECT count(*) FROM memories WHERE {condition}", *args)
        limit, offset = param(f.limit), param((f.page - 1) * f.limit)
        rows = await self.db.fetch(
            f"""SELECT {MEMORY_COLUMNS} FROM memories WHERE {condition}
                ORDER BY {order} NULLS LAST, id LIMIT {limit} OFFSET {offset}""",
            *args,
        )
        return to_models(Memory, rows), int(total)

    async def get(self, user_id: UUID, memory_id: UUID) -> Memory | None:
        row = await self.db.fetchrow(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE user_id = $1 AND id = $2",
            user_id,
            memory_id,
        )
        return to_model(Memory, row) if row else None

    async def create(self, user_id: UUID, fields: dict[str, Any]) -> tuple[Memory, Event]:
        columns = "".join(f", {c}" for c in fields)
        params = "".join(f", ${i + 2}" for i in range(len(fields)))
        async with self.db.transaction() as conn:
            await _check_category(conn, user_id, fields.get("category_id"))
            row = await conn.fetchrow(
                f"""INSERT INTO memories (user_id{columns}) VALUES ($1{params})
                    RETURNING {MEMORY_COLUMNS}""",
                user_id,
                *fields.values(),
            )
            memory = to_model(Memory, row)
            return memory, await append_event(conn, user_id, "memory.created", memory)

    async def update(
        self, user_id: UUID, memory_id: UUID, changes: dict[str, Any]
    ) -> tuple[Memory, Event] | None:
        sets, values = set_clause(changes, 3)
        async with self.db.transaction() as conn:
            if "category_id" in changes:
                await _check_category(conn, user_id, changes["category_id"])
            row = await conn.fetchrow(
                f"""UPDATE memories SET {sets}, updated_at = now()
                    WHERE user_id = $1 AND id = $2 RETURNING {MEMORY_COLUMNS}""",
                user_id,
                memory_id,
                *values,
            )
            if row is None:
                return None
            memory = to_model(Memory, row)
            return memory, await append_event(conn, user_id, "memory.updated", memory)

    async def mark_read(
        self, user_id: UUID, memory_id: UUID, seq: int
    ) -> tuple[int, Event | None] | None:
        """Move the read marker forward (never back, never past the last message).

        Returns the marker and its ``memory.read`` event (None when it did not move), or
        None when the memory is not the user's.
        """
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                """UPDATE memories SET last_read_seq = LEAST($3, last_message_seq)
                   WHERE user_id = $1 AND id = $2 AND last_read_seq < LEAST($3, last_message_seq)
                   RETURNING last_read_seq""",
                user_id,
                memory_id,
                seq,
            )
            if row is None:
                current = await conn.fetchval(
                    "SELECT last_read_seq FROM memories WHERE user_id = $1 AND id = $2",
                    user_id,
                    memory_id,
                )
                return None if current is None else (int(current), None)
            marker = ReadMarker(memory_id=memory_id, seq=row["last_read_seq"])
            return marker.seq, await append_event(conn, user_id, "memory.read", marker)

    async def delete(self, user_id: UUID, memory_id: UUID) -> Event | None:
        async with self.db.transaction() as conn:
            deleted = await conn.fetchval(
                "DELETE FROM memories WHERE user_id = $1 AND id = $2 RETURNING id",
                user_id,
                memory_id,
            )
            if deleted is None:
                return None
            return await append_event(conn, user_id, "memory.deleted", Deleted(id=memory_id))
