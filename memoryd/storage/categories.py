"""Memory categories of one user."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from memoryd.errors import Conflict
from memoryd.protocol.models import Category, Deleted, Event, Memory
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.rows import CATEGORY_COLUMNS, MEMORY_COLUMNS, set_clause, to_model, to_models


def _name_taken() -> Conflict:
    return Conflict(
        "A category with that name already exists",
        details=[{"field": "name", "message": "already exists"}],
    )


class CategoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_all(self, user_id: UUID) -> list[Category]:
        rows = await self.db.fetch(
            f"""SELECT {CATEGORY_COLUMNS} FROM memory_categories WHERE user_id = $1
                ORDER BY sort_order, lower(name)""",
            user_id,
        )
        return to_models(Category, rows)

    async def get(self, user_id: UUID, category_id: UUID) -> Category | None:
        row = await self.db.fetchrow(
            f"SELECT {CATEGORY_COLUMNS} FROM memory_categories WHERE user_id = $1 AND id = $2",
            user_id,
            category_id,
        )
        return to_model(Category, row) if row else None

    async def create(self, user_id: UUID, fields: dict[str, Any]) -> tuple[Category, Event]:
        columns = ", ".join(fields)
        params = ", ".join(f"${i + 2}" for i in range(len(fields)))
        try:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    f"""INSERT INTO memory_categories (user_id, {columns}) VALUES ($1, {params})
                        RETURNING {CATEGORY_COLUMNS}""",
                    user_id,
                    *fields.values(),
                )
                category = to_model(Category, row)
                return category, await append_event(conn, user_id, "category.created", category)
        except asyncpg.UniqueViolationError:
            raise _name_taken() from None

    async def update(
        self, user_id: UUID, category_id: UUID, changes: dict[str, Any]
    ) -> tuple[Category, Event] | None:
        sets, values = set_clause(changes, 3)
        try:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    f"""UPDATE memory_categories SET {sets}, updated_at = now()
                        WHERE user_id = $1 AND id = $2 RETURNING {CATEGORY_COLUMNS}""",
                    user_id,
                    category_id,
                    *values,
                )
                if row is None:
                    return None
                category = to_model(Category, row)
                return category, await append_event(conn, user_id, "category.updated", category)
        except asyncpg.UniqueViolationError:
            raise _name_taken() from None

    async def delete(self, user_id: UUID, category_id: UUID) -> list[Event] | None:
        """Delete a category; its memories stay, uncategorised, each with its own event."""
        async with self.db.transaction() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM memory_categories WHERE user_id = $1 AND id = $2 FOR UPDATE",
                user_id,
                category_id,
            )
            if not found:
                return None
            rows = await conn.fetch(
                f"""UPDATE memories SET category_id = NULL, updated_at = now()
                    WHERE user_id = $1 AND category_id = $2 RETURNING {MEMORY_COLUMNS}""",
                user_id,
                category_id,
            )
            events = [
                await append_event(conn, user_id, "memory.updated", memory)
                for memory in to_models(Memory, rows)
            ]
            await conn.execute(
                "DELETE FROM memory_categories WHERE user_id = $1 AND id = $2",
                user_id,
                category_id,
            )
            events.append(
                await append_event(conn, user_id, "category.deleted", Deleted(id=category_id))
            )
            return events
