"""Memory categories."""

from __future__ import annotations

from uuid import UUID

from memoryd.errors import NotFound
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of, require_changes
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Category
from memoryd.protocol.requests import CreateCategoryRequest, UpdateCategoryRequest


def _not_found() -> NotFound:
    return NotFound("Category not found")


async def list_categories(svc: Services, caller: Caller) -> list[Category]:
    caller.require(Permission.READ_MEMORIES)
    return await svc.store.categories.list_all(caller.user_id)


async def create_category(svc: Services, caller: Caller, req: CreateCategoryRequest) -> Category:
    caller.require(Permission.WRITE_MEMORIES)
    category, event = await svc.store.categories.create(
        caller.user_id, fields_of(req, CreateCategoryRequest)
    )
    svc.publish(caller.user_id, event)
    return category


async def update_category(
    svc: Services, caller: Caller, category_id: UUID, req: UpdateCategoryRequest
) -> Category:
    caller.require(Permission.WRITE_MEMORIES)
    changes = fields_of(req, UpdateCategoryRequest)
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
