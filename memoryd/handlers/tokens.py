"""RS256 access and refresh tokens (iss ``memory-app``, aud ``memory-app-users``).

Access tokens carry the seed's payload ``{userId, email, role, permissions}``; refresh
tokens carry ``jti`` and ``fam`` (their rotation family), tracked in the database.
A ``typ`` claim keeps one kind from being accepted as the other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt

from memoryd.errors import Unauthorized
from memoryd.handlers.rbac import permissions_for
from memoryd.protocol.models import User

ISSUER = "memory-app"
AUDIENCE = "memory-app-users"
ALGORITHM = "RS256"
# Nodes' clocks differ slightly: a token issued by one node must not be "not yet valid"
# (its ``iat`` a second in the future) on another.
CLOCK_SKEW = 30


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    email: str
    role: str
    permissions: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True)
class RefreshClaims:
    user_id: UUID
    jti: UUID
    family_id: UUID


@dataclass(frozen=True)
class IssuedRefresh:
    token: str
    jti: UUID
    expires_at: datetime


class TokenIssuer:
    def __init__(
        self, private_pem: bytes, public_pem: bytes, *, access_ttl: int, refresh_ttl: int
    ) -> None:
        self._private = private_pem
        self._public = public_pem
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue_access(self, user: User, *, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        payload = {
            "userId": str(user.id),
            "email": user.email,
            "role": user.role,
            "permissions": permissions_for(user.role),
            "sub": str(user.id),
            "typ": "access",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + timedelta(seconds=self.access_ttl),
        }
        return jwt.encode(payload, self._private, algorithm=ALGORITHM)

    def issue_refresh(self, user_id: UUID, family_id: UUID) -> IssuedRefresh:
        now = datetime.now(UTC)
        jti = uuid.uuid4()
        expires_at = now + timedelta(seconds=self.refresh_ttl)
        payload = {
            "sub": str(user_id),
            "jti": str(jti),
            "fam": str(family_id),
            "typ": "refresh",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": expires_at,
        }
        return IssuedRefresh(
            jwt.encode(payload, self._private, algorithm=ALGORITHM), jti, expires_at
        )

    def _decode(self, token: str, typ: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token", code="invalid_token") from None
        if claims.get("typ") != typ:
            raise Unauthorized("Invalid token", code="invalid_token")
        return claims

    def verify_access(self, token: str) -> AccessClaims:
        claims = self._decode(token, "access")
        try:
            return AccessClaims(
                user_id=UUID(claims["userId"]),
                email=str(claims["email"]),
                role=str(claims["role"]),
                permissions=frozenset(claims["permissions"]),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (KeyError, ValueError, TypeError):
            raise Unauthorized("Invalid token", code="invalid_token") from None

    def verify_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, "refresh")
        try:
            return RefreshClaims(UUID(claims["sub"]), UUID(claims["jti"]), UUID(claims["fam"]))
        except (KeyError, ValueError, TypeError):
            raise Unauthorized("Invalid token", code="invalid_token") from None
