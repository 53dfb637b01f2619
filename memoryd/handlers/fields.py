"""Small helpers shared by the handlers' request types."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from memoryd.errors import NotFound, ValidationFailed


def fields_of(request: msgspec.Struct, model: type[msgspec.Struct]) -> dict[str, Any]:
    """The fields of ``model`` that ``request`` carries, skipping UNSET (absent in a PATCH).

    ``request`` may be a socket frame extending ``model``; its own ``id`` and target ids
    are left out.
    """
    return {
        name: value
        for name in model.__struct_fields__
        if (value := getattr(request, name)) is not msgspec.UNSET
    }


def parse_id(value: str, what: str) -> UUID:
    """A path id; a malformed one is simply not found (it cannot name anything)."""
    try:
        return UUID(value)
    except (ValueError, TypeError):
        raise NotFound(f"{what} not found") from None


def require_changes(changes: dict[str, Any]) -> None:
    if not changes:
        raise ValidationFailed(
            "Nothing to update", details=[{"field": None, "message": "no updatable field given"}]
        )
