"""Memories: the threads a user keeps."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from memoryd.errors import NotFound
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import Limit, Page, SortOrder, changed_fields, require_changes
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Memory, Pagination
from memoryd.storage.memories import MemoryFilter

Title = Annotated[str, msgspec.Meta(max_length=255)]
Description = Annotated[str, msgspec.Meta(max_length=1000)]
Tags = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=50)]], msgspec.Meta(max_length=10)
]
PrivacyLevel = Annotated[
    str,
    msgspec.Meta(
        pattern="^(private|shared|public)$", extra={"message": "must be private, shared or public"}
    ),
]
SortBy = Annotated[
    str,
    msgspec.Meta(
        pattern="^(created_at|updated_at|title)$",
        extra={"message": "must be created_at, updated_at or title"},
    ),
]


class ListMemoriesRequest(msgspec.Struct, rename="camel", kw_only=True):
    category_id: UUID | None = None
    page: Page = 1
    limit: Limit = 20
    search: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    tags: Tags = []
    is_favorite: bool | None = None
    is_archived: bool | None = None
    sort_by: SortBy = "updated_at"
    sort_order: SortOrder = "desc"


class CreateMemoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    title: Title | None = None
    description: Description | None = None
    category_id: UUID | None = None
    content: Any = None
    tags: Tags = []
    metadata: Any = None
    is_favorite: bool = False
    is_archived: bool = False
    privacy_level: PrivacyLevel = "private"


class UpdateMemoryRequest(msgspec.Struct, rename="camel", kw_only=True):
    title: Title | UnsetType | None = UNSET
    description: Description | UnsetType | None = UNSET
    category_id: UUID | UnsetType | None = UNSET
    content: Any | UnsetType = UNSET
    tags: Tags | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET
    is_favorite: bool | UnsetType = UNSET
    is_archived: bool | UnsetType = UNSET
    privacy_level: PrivacyLevel | UnsetType = UNSET


class MemoryPage(msgspec.Struct, rename="camel", kw_only=True):
    memories: list[Memory]
    pagination: Pagination


def _not_found() -> NotFound:
    return NotFound("Memory not found")


async def list_memories(svc: Services, caller: Caller, req: ListMemoriesRequest) -> MemoryPage:
    caller.require(Permission.READ_MEMORIES)
    memories, total = await svc.store.memories.find(
        caller.user_id,
        MemoryFilter(
            category_id=req.category_id,
            search=req.search.strip() if req.search else None,
            tags=tuple(req.tags),
            is_favorite=req.is_favorite,
            is_archived=req.is_archived,
            sort_by=req.sort_by,
            sort_order=req.sort_order,
            page=req.page,
            limit=req.limit,
        ),
    )
    return MemoryPage(memories=memories, pagination=Pagination.of(req.page, req.limit, total))


async def get_memory(svc: Services, caller: Caller, memory_id: UUID) -> Memory:
    caller.require(Permission.READ_MEMORIES)
    memory = await svc.store.memories.get(caller.user_id, memory_id)
    if memory is None:
        raise _not_found()
    return memory


async def create_memory(svc: Services, caller: Caller, req: CreateMemoryRequest) -> Memory:
    caller.require(Permission.WRITE_MEMORIES)
    memory, event = await svc.store.memories.create(caller.user_id, msgspec.structs.asdict(req))
    svc.publish(caller.user_id, event)
    return memory


async def update_memory(
    svc: Services, caller: Caller, memory_id: UUID, req: UpdateMemoryRequest
) -> Memory:
    caller.require(Permission.WRITE_MEMORIES)
    changes = changed_fields(req)
    require_changes(changes)
    if changes.get("tags") is None and "tags" in changes:
        changes["tags"] = []
    result = await svc.store.memories.update(caller.user_id, memory_id, changes)
    if result is None:
        raise _not_found()
    svc.publish(caller.user_id, result[1])
    return result[0]


async def delete_memory(svc: Services, caller: Caller, memory_id: UUID) -> None:
    caller.require(Permission.DELETE_MEMORIES)
    event = await svc.store.memories.delete(caller.user_id, memory_id)
    if event is None:
        raise _not_found()
    svc.publish(caller.user_id, event)
