"""Memories: the threads a user keeps."""

from __future__ import annotations

from uuid import UUID

from memoryd.errors import NotFound
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of, require_changes
from memoryd.handlers.rbac import Permission
from memoryd.handlers.search import matching_memories
from memoryd.protocol.models import Memory, Pagination, ReadMarker
from memoryd.protocol.requests import (
    CreateMemoryRequest,
    ListMemoriesRequest,
    MemoryPage,
    UpdateMemoryRequest,
)
from memoryd.storage.memories import MemoryFilter


def _not_found() -> NotFound:
    return NotFound("Memory not found")


async def list_memories(svc: Services, caller: Caller, req: ListMemoriesRequest) -> MemoryPage:
    caller.require(Permission.READ_MEMORIES)
    search = req.search.strip() if req.search else None
    # What was said in the memory's messages matches too (the search engine's text ranking).
    found = await matching_memories(svc, caller.user_id, search, 1000) if search else []
    memories, total = await svc.store.memories.find(
        caller.user_id,
        MemoryFilter(
            category_id=req.category_id,
            search=search,
            search_ids=tuple(found),
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
    memory, event = await svc.store.memories.create(
        caller.user_id, fields_of(req, CreateMemoryRequest)
    )
    svc.publish(caller.user_id, event)
    return memory


async def update_memory(
    svc: Services, caller: Caller, memory_id: UUID, req: UpdateMemoryRequest
) -> Memory:
    caller.require(Permission.WRITE_MEMORIES)
    changes = fields_of(req, UpdateMemoryRequest)
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


async def mark_read(svc: Services, caller: Caller, memory_id: UUID, seq: int) -> ReadMarker:
    """Durable read state: every device sees the same unread count."""
    caller.require(Permission.READ_MEMORIES)
    result = await svc.store.memories.mark_read(caller.user_id, memory_id, seq)
    if result is None:
        raise _not_found()
    marker_seq, event = result
    svc.publish(caller.user_id, event)
    return ReadMarker(memory_id=memory_id, seq=marker_seq)
