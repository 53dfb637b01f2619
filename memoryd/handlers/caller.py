"""The authenticated user behind a request."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from memoryd.errors import Forbidden
from memoryd.handlers.rbac import Permission


@dataclass(frozen=True)
class Caller:
    """The authenticated user behind a request (from a verified access token)."""

    user_id: UUID
    email: str
    role: str
    permissions: frozenset[str]
    device_id: UUID | None = None

    def require(self, permission: Permission) -> None:
        if permission.value not in self.permissions:
            raise Forbidden(
                f"Missing permission: {permission.value}",
                code="forbidden",
                details={"permission": permission.value},
            )

    def may(self, permission: Permission) -> bool:
        return permission.value in self.permissions
