"""Memory categories."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.errors import NotFound
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import HexColor, changed_fields, require_changes
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Category

CategoryName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Icon = Annotated[str, msgspec.Meta(max_length=50)]
SortOrderValue = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class CreateCategoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    name: CategoryName
    description: Description | None = None
    icon: Icon | None = None
    color: HexColor | None = None
    sort_order: SortOrderValue = 0


class UpdateCategoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    name: CategoryName | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    icon: Icon | UnsetType | None = UNSET
    color: HexColor | UnsetType | None = UNSET
    sort_order: SortOrderValue | UnsetType = UNSET


def _not_found() -> NotFound:
    return NotFound("Category not found")


async def list_categories(svc: Services, caller: Caller) -> list[Category]:
    caller.require(Permission.READ_MEMORIES)
    return await svc.store.categories.list_all(caller.user_id)


async def create_category(svc: Services, caller: Caller, req: CreateCategoryRequest) -> Category:
    caller.require(Permission.WRITE_MEMORIES)
    category, event = await svc.store.categories.create(caller.user_id, msgspec.structs.asdict(req))
    svc.publish(caller.user_id, event)
    return category


async def update_category(
    svc: Services, caller: Caller, category_id: UUID, req: UpdateCategoryRequest
) -> Category:
    caller.require(Permission.WRITE_MEMORIES)
    changes = changed_fields(req)
    require_changes(changes)
    result = await svc.store.categories.update(caller.user_id, category_id, changes)
    if result is None:
        raise _not_found()
    svc.publish(caller.user_id, result[1])
    return result[0]


async def delete_category(svc: Services, caller: Caller, category_id: UUID) -> None:
    """Deleting a category keeps its memories (uncategorised); it needs write access only."""
    caller.require(Permission.WRITE_MEMORIES)
    events = await svc.store.categories.delete(caller.user_id, category_id)
    if events is None:
        raise _not_found()
    svc.publish(caller.user_id, *events)
