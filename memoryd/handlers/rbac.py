"""Roles and permissions exactly as the seed plan's ROLE_PERMISSIONS."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    READ_MEMORIES = "read:memories"
    WRITE_MEMORIES = "write:memories"
    DELETE_MEMORIES = "delete:memories"
    MANAGE_USERS = "manage:users"
    ACCESS_AI = "access:ai"
    SYNC_WHATSAPP = "sync:whatsapp"


class Role(StrEnum):
    USER = "user"
    PREMIUM = "premium"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, tuple[Permission, ...]] = {
    Role.USER: (Permission.READ_MEMORIES, Permission.WRITE_MEMORIES),
    Role.PREMIUM: (
        Permission.READ_MEMORIES,
        Permission.WRITE_MEMORIES,
        Permission.DELETE_MEMORIES,
        Permission.ACCESS_AI,
        Permission.SYNC_WHATSAPP,
    ),
    Role.ADMIN: tuple(Permission),
}


def permissions_for(role: str) -> list[str]:
    return [p.value for p in ROLE_PERMISSIONS[Role(role)]]
