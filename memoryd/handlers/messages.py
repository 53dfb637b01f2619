"""Messages inside a memory: idempotent sends, edits, deletes, history."""

from __future__ import annotations

from uuid import UUID

from memoryd.errors import NotFound, ValidationFailed
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of, require_changes
from memoryd.handlers.rbac import Permission
from memoryd.protocol.models import Message, Pagination
from memoryd.protocol.requests import (
    EditMessageRequest,
    HistoryPage,
    ListMessagesRequest,
    MessagePage,
    SendMessageRequest,
    SendResult,
)
from memoryd.storage.messages import MessageWindow, NewMessage


def _check_content_length(svc: Services, content: object) -> None:
    limit = svc.settings.max_content_chars
    if isinstance(content, str) and len(content) > limit:
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "content", "message": f"Expected `str` of length <= {limit}"}],
        )


async def send_message(
    svc: Services, caller: Caller, memory_id: UUID, req: SendMessageRequest
) -> SendResult:
    caller.require(Permission.WRITE_MEMORIES)
    _check_content_length(svc, req.content)
    message, event = await svc.store.messages.create(
        caller.user_id,
        memory_id,
        NewMessage(
            content=req.content,
            message_type=req.message_type,
            metadata=req.metadata,
            attachments=tuple(req.attachments),
            parent_id=req.parent_id,
            client_msg_id=req.client_msg_id,
        ),
    )
    svc.publish(caller.user_id, event)
    return SendResult(message=message, created=event is not None)


async def list_messages(
    svc: Services, caller: Caller, memory_id: UUID, req: ListMessagesRequest
) -> MessagePage:
    caller.require(Permission.READ_MEMORIES)
    messages, total = await svc.store.messages.page(
        caller.user_id,
        memory_id,
        MessageWindow(
            page=req.page,
            limit=req.limit,
            before=req.before,
            after=req.after,
            sort_order=req.sort_order,
        ),
    )
    return MessagePage(messages=messages, pagination=Pagination.of(req.page, req.limit, total))


async def get_message(
    svc: Services, caller: Caller, message_id: UUID, memory_id: UUID | None = None
) -> Message:
    """One message; with ``memory_id`` it must also belong to that memory."""
    caller.require(Permission.READ_MEMORIES)
    message = await svc.store.messages.get(caller.user_id, message_id)
    if message is None or (memory_id is not None and message.memory_id != memory_id):
        raise NotFound("Message not found")
    return message


async def edit_message(
    svc: Services,
    caller: Caller,
    message_id: UUID,
    req: EditMessageRequest,
    memory_id: UUID | None = None,
) -> Message:
    caller.require(Permission.WRITE_MEMORIES)
    if memory_id is not None:
        await get_message(svc, caller, message_id, memory_id)
    changes = fields_of(req, EditMessageRequest)
    _check_content_length(svc, changes.get("content"))
    require_changes(changes)
    result = await svc.store.messages.update(caller.user_id, message_id, changes)
    if result is None:
        raise NotFound("Message not found")
    svc.publish(caller.user_id, result[1])
    return result[0]


async def delete_message(
    svc: Services, caller: Caller, message_id: UUID, memory_id: UUID | None = None
) -> None:
    caller.require(Permission.DELETE_MEMORIES)
    if memory_id is not None:
        await get_message(svc, caller, message_id, memory_id)
    event = await svc.store.messages.delete(caller.user_id, message_id)
    if event is None:
        raise NotFound("Message not found")
    svc.publish(caller.user_id, event)


async def history(
    svc: Services, caller: Caller, memory_id: UUID, before: int | None, limit: int
) -> HistoryPage:
    """The ``limit`` messages before per-memory seq ``before`` (or the newest), oldest first."""
    caller.require(Permission.READ_MEMORIES)
    messages = await svc.store.messages.history(caller.user_id, memory_id, before, limit + 1)
    has_more = len(messages) > limit
    return HistoryPage(messages=messages[1:] if has_more else messages, has_more=has_more)
