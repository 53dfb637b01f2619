"""Users, their credentials and refresh-token families."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from memoryd.errors import Conflict
from memoryd.protocol.models import Event, User
from memoryd.storage.database import Database
from memoryd.storage.events import append_event
from memoryd.storage.rows import USER_COLUMNS, set_clause, to_model


@dataclass(frozen=True)
class NewCategory:
    name: str
    icon: str | None
    color: str | None
    description: str | None = None


@dataclass(frozen=True)
class Credentials:
    user: User
    password_hash: str | None


def _unique_conflict(exc: asyncpg.UniqueViolationError) -> Conflict:
    if "username" in (exc.constraint_name or ""):
        return Conflict(
            "That username is taken", details=[{"field": "username", "message": "taken"}]
        )
    return Conflict(
        "An account with that email already exists",
        details=[{"field": "email", "message": "already registered"}],
    )


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        email: str,
        password_hash: str | None,
        first_name: str | None,
        last_name: str | None,
        username: str | None = None,
        google_sub: str | None = None,
        is_verified: bool = False,
        avatar_url: str | None = None,
        default_categories: Sequence[NewCategory] = (),
    ) -> User:
        """Insert a user with their default categories and an empty event log."""
        try:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    f"""INSERT INTO users (email, password_hash, first_name, last_name, username,
                            google_sub, is_verified, avatar_url)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_COLUMNS}""",
                    email, password_hash, first_name, last_name, username,
                    google_sub, is_verified, avatar_url,
                )  # fmt: skip
                user = to_model(User, row)
                await conn.execute("INSERT INTO user_event_heads (user_id) VALUES ($1)", user.id)
                await conn.executemany(
                    """INSERT INTO memory_categories
                           (user_id, name, description, icon, color, is_default, sort_order)
                       VALUES ($1, $2, $3, $4, $5, TRUE, $6)""",
                    [
                        (user.id, c.name, c.description, c.icon, c.color, i)
                        for i, c in enumerate(default_categories)
                    ],
                )
                return user
        except asyncpg.UniqueViolationError as exc:
            raise _unique_conflict(exc) from None

    async def get(self, user_id: UUID) -> User | None:
        row = await self.db.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
        return to_model(User, row) if row else None

    async def get_by_email(self, email: str) -> User | None:
        row = await self.db.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
        )
        return to_model(User, row) if row else None

    async def get_by_google_sub(self, sub: str) -> User | None:
        row = await self.db.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE google_sub = $1", sub)
        return to_model(User, row) if row else None

    async def credentials(self, email: str) -> Credentials | None:
        row = await self.db.fetchrow(
            f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(email) = lower($1)",
            email,
        )
        if row is None:
            return None
        fields = dict(row.items())
        password_hash = fields.pop("password_hash")
        return Credentials(User(**fields), password_hash)

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        await self.db.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash
        )

    async def link_google(self, user_id: UUID, sub: str, *, drop_password: bool) -> None:
        await self.db.execute(
            """UPDATE users SET google_sub = $2, is_verified = TRUE,
                   password_hash = CASE WHEN $3 THEN NULL ELSE password_hash END
               WHERE id = $1""",
            user_id,
            sub,
            drop_password,
        )

    async def touch_login(self, user_id: UUID, at: datetime) -> None:
        await self.db.execute("UPDATE users SET last_login_at = $2 WHERE id = $1", user_id, at)

    async def update_profile(self, user_id: UUID, changes: dict[str, Any]) -> tuple[User, Event]:
        """Change profile columns; records a ``user.updated`` event for the user's devices."""
        sets, values = set_clause(changes, 2)
        try:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    f"""UPDATE users SET {sets}, updated_at = now() WHERE id = $1
                        RETURNING {USER_COLUMNS}""",
                    user_id,
                    *values,
                )
                user = to_model(User, row)
                event = await append_event(conn, user_id, "user.updated", user)
                return user, event
        except asyncpg.UniqueViolationError as exc:
            raise _unique_conflict(exc) from None

    async def set_role(self, email: str, role: str) -> User | None:
        row = await self.db.fetchrow(
            f"""UPDATE users SET role = $2, updated_at = now() WHERE lower(email) = lower($1)
                RETURNING {USER_COLUMNS}""",
            email,
            role,
        )
        return to_model(User, row) if row else None


@dataclass(frozen=True)
class RefreshUse:
    """What presenting a refresh token found."""

    status: str  # "ok" | "unknown" | "expired" | "revoked" | "reused"
    user_id: UUID | None = None
    family_id: UUID | None = None


class RefreshTokenStore:
    """Refresh tokens are rotated on every use; a replayed one burns its whole family."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def issue(
        self, *, jti: UUID, family_id: UUID, user_id: UUID, expires_at: datetime
    ) -> None:
        await self.db.execute(
            """INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at)
               VALUES ($1, $2, $3, $4)""",
            jti,
            family_id,
            user_id,
            expires_at,
        )

    async def rotate(self, *, jti: UUID, new_jti: UUID, expires_at: datetime) -> RefreshUse:
        """Revoke ``jti`` and issue ``new_jti`` in its family, atomically.

        Two concurrent uses of one token: exactly one wins, the other finds it revoked and
        is treated as reuse (the family is burnt), which is the safe answer to a race
        between a client and a thief.
        """
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                """UPDATE refresh_tokens
                   SET revoked_at = now(), revoked_reason = 'rotated', replaced_by = $2
                   WHERE jti = $1 AND revoked_at IS NULL AND expires_at > now()
                   RETURNING family_id, user_id""",
                jti,
                new_jti,
            )
            if row is not None:
                await conn.execute(
                    """INSERT INTO refresh_tokens (jti, family_id, user_id, expires_at)
                       VALUES ($1, $2, $3, $4)""",
                    new_jti,
                    row["family_id"],
                    row["user_id"],
                    expires_at,
                )
                return RefreshUse("ok", row["user_id"], row["family_id"])
            old = await conn.fetchrow(
                """SELECT family_id, user_id, revoked_at, revoked_reason
                   FROM refresh_tokens WHERE jti = $1""",
                jti,
            )
        if old is None:
            return RefreshUse("unknown")
        if old["revoked_at"] is None:
            return RefreshUse("expired", old["user_id"], old["family_id"])
        if old["revoked_reason"] != "rotated":  # logged out, or its family already burnt
            return RefreshUse("revoked", old["user_id"], old["family_id"])
        await self.revoke_family(old["family_id"], "reuse_detected")
        return RefreshUse("reused", old["user_id"], old["family_id"])

    async def family_of(self, jti: UUID, user_id: UUID) -> UUID | None:
        value = await self.db.fetchval(
            "SELECT family_id FROM refresh_tokens WHERE jti = $1 AND user_id = $2", jti, user_id
        )
        return value  # type: ignore[no-any-return]

    async def revoke_family(self, family_id: UUID, reason: str) -> None:
        await self.db.execute(
            """UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $2
               WHERE family_id = $1 AND revoked_at IS NULL""",
            family_id,
            reason,
        )

    async def revoke_all(self, user_id: UUID, reason: str) -> None:
        await self.db.execute(
            """UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $2
               WHERE user_id = $1 AND revoked_at IS NULL""",
            user_id,
            reason,
        )
