"""Small helpers shared by the handlers' request types."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from memoryd.errors import NotFound, ValidationFailed

Page = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
SortOrder = Annotated[
    str, msgspec.Meta(pattern="^(asc|desc)$", extra={"message": "must be asc or desc"})
]
HexColor = Annotated[
    str,
    msgspec.Meta(pattern="^#[0-9A-Fa-f]{6}$", extra={"message": "must be a color like #1A2B3C"}),
]


def changed_fields(request: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH request actually carries (absent ones are UNSET)."""
    return {
        name: value
        for name in request.__struct_fields__
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
