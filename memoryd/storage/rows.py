"""Column lists and record -> resource conversion shared by the repositories."""

from __future__ import annotations

from typing import TypeVar

import asyncpg

from memoryd.protocol.models import Resource

USER_COLUMNS = """id, email, username, first_name, last_name, avatar_url, phone_number,
    timezone, language, theme_preference, role, is_verified, is_active, last_login_at,
    created_at, updated_at"""

CATEGORY_COLUMNS = """id, user_id, name, description, icon, color, is_default, sort_order,
    created_at, updated_at"""

MEMORY_COLUMNS = """id, user_id, category_id, title, description, content, tags, metadata,
    is_favorite, is_archived, privacy_level, last_message_seq, last_read_seq, message_count,
    created_at, updated_at"""

MESSAGE_COLUMNS = """id, memory_id, user_id, seq, client_msg_id, content, message_type,
    metadata, attachments, is_ai_generated, parent_message_id AS parent_id, status,
    created_at, updated_at"""

R = TypeVar("R", bound=Resource)


def to_model(model: type[R], record: asyncpg.Record) -> R:
    return model(**dict(record.items()))


def to_models(model: type[R], records: list[asyncpg.Record]) -> list[R]:
    return [model(**dict(r.items())) for r in records]


def set_clause(changes: dict[str, object], first_param: int) -> tuple[str, list[object]]:
    """``col = $n, ...`` for an UPDATE; column names come from code, never from input."""
    parts = [f"{column} = ${first_param + i}" for i, column in enumerate(changes)]
    return ", ".join(parts), list(changes.values())
