"""Messages inside a memory: idempotent sends, edits, deletes, history."""

from __future__ import annotations

from uuid import UUID

from memoryd.errors import NotFound, ValidationFailed
from memoryd.handlers import ai_reply, whatsapp
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


# clientMsgIds the server gives its own messages (Memo's replies, WhatsApp inbound): a
# client that took one could block the message it stands for.
RESERVED_CLIENT_MSG_ID_PREFIXES = ("memo:", "wa:")


def _check_client_msg_id(client_msg_id: str | None) -> None:
    if client_msg_id is not None and client_msg_id.startswith(RESERVED_CLIENT_MSG_ID_PREFIXES):
        reserved = " and ".join(f"`{p}`" for p in RESERVED_CLIENT_MSG_ID_PREFIXES)
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "clientMsgId", "message": f"the prefixes {reserved} are reserved"}],
        )


async def send_message(
    svc: Services, caller: Caller, memory_id: UUID, req: SendMessageRequest
) -> SendResult:
    caller.require(Permission.WRITE_MEMORIES)
    _check_content_length(svc, req.content)
    _check_client_msg_id(req.client_msg_id)
    new = NewMessage(
        content=req.content,
        message_type=req.message_type,
        metadata=req.metadata,
        attachments=tuple(req.attachments),
        parent_id=req.parent_id,
        client_msg_id=req.client_msg_id,
    )
    # In a WhatsApp thread the message is stored pending, with its send job.
    outbound = await whatsapp.plan_outbound(svc, caller, memory_id, new)
    # With ai: true (or in a thread Memo answers) Memo's reply job is stored with it.
    reply = await ai_reply.planned_reply(svc, caller, memory_id, req.ai, req.client_msg_id)
    message, event = await svc.store.messages.create(
        caller.user_id,
        memory_id,
        outbound.message if outbound else new,
        job=ai_reply.combine(outbound.job if outbound else None, reply),
    )
    svc.publish(caller.user_id, event)
    if (outbound is not None or reply is not None) and event is not None:
        svc.wake_jobs()
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
