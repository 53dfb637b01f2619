"""Messages inside a memory: idempotent sends, edits, deletes, history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from memoryd.errors import ClientError, NotFound, ValidationFailed
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.fields import fields_of, require_changes
from memoryd.handlers.pipeline import Change, Send
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
from memoryd.storage.messages import (
    PLAIN_CONTEXT,
    ChangePlan,
    MessageWindow,
    NewMessage,
    SendContext,
    SendPlan,
)


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
    """Store a message through the send pipeline (`handlers/pipeline.py`).

    A resend with a stored ``clientMsgId`` answers with the stored message before any
    check meant for new work (write permission, content length, a feature's planner),
    so the answer never changes after a limit, a role or a WhatsApp connection did.
    """
    caller.require(Permission.READ_MEMORIES)  # what a replay gives away
    _check_client_msg_id(req.client_msg_id)
    new = NewMessage(
        content=req.content,
        message_type=req.message_type,
        metadata=req.metadata,
        attachments=tuple(req.attachments),
        parent_id=req.parent_id,
        client_msg_id=req.client_msg_id,
    )
    planned: list[SendPlan] = []

    def checks_for_new_work() -> None:
        caller.require(Permission.WRITE_MEMORIES)
        _check_content_length(svc, req.content)

    async def plan(context: SendContext, new: NewMessage) -> SendPlan:
        # Only new work from here on: the replay check is behind us.
        checks_for_new_work()
        send = Send(caller=caller, memory_id=memory_id, request=req, context=context, message=new)
        planned.append(await svc.pipeline.plan_send(send))
        return planned[-1]

    # The one-statement path, when the checks and planners pass on a plain memory. A
    # check that fails here is not an answer yet: the send may be a replay, which the
    # transaction path then answers before any check.
    plain = None
    if svc.settings.send_one_statement and new.fits_one_statement:
        try:
            checks_for_new_work()
        except ClientError:
            pass
        else:
            plain = await svc.pipeline.plain(
                Send(caller=caller, memory_id=memory_id, request=req,
                     context=PLAIN_CONTEXT, message=new)
            )  # fmt: skip
    message, event = await svc.store.messages.create(
        caller.user_id, memory_id, new, plan=plan, plain=plain
    )
    svc.publish(caller.user_id, event)
    if event is not None and planned and planned[-1].jobs:
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
    hook = _Listeners(caller, svc.pipeline.edited)
    result = await svc.store.messages.update(
        caller.user_id, message_id, changes, hook=hook if svc.pipeline.listens("edit") else None
    )
    if result is None:
        raise NotFound("Message not found")
    svc.publish(caller.user_id, result[1])
    if hook.added_jobs:
        svc.wake_jobs()
    return result[0]


async def delete_message(
    svc: Services, caller: Caller, message_id: UUID, memory_id: UUID | None = None
) -> None:
    caller.require(Permission.DELETE_MEMORIES)
    if memory_id is not None:
        await get_message(svc, caller, message_id, memory_id)
    hook = _Listeners(caller, svc.pipeline.deleted)
    event = await svc.store.messages.delete(
        caller.user_id, message_id, hook=hook if svc.pipeline.listens("delete") else None
    )
    if event is None:
        raise NotFound("Message not found")
    svc.publish(caller.user_id, event)
    if hook.added_jobs:
        svc.wake_jobs()


class _Listeners:
    """The storage hook of an edit or delete: runs the registered listeners and keeps
    their plan, so the job runner is woken after commit when they added jobs."""

    def __init__(self, caller: Caller, run: Callable[[Change], Awaitable[ChangePlan]]) -> None:
        self.caller = caller
        self.run = run
        self.added_jobs = False

    async def __call__(self, message: Message) -> ChangePlan:
        plan = await self.run(Change(caller=self.caller, message=message))
        self.added_jobs = bool(plan.jobs)
        return plan


async def history(
    svc: Services, caller: Caller, memory_id: UUID, before: int | None, limit: int
) -> HistoryPage:
    """The ``limit`` messages before per-memory seq ``before`` (or the newest), oldest first."""
    caller.require(Permission.READ_MEMORIES)
    messages = await svc.store.messages.history(caller.user_id, memory_id, before, limit + 1)
    has_more = len(messages) > limit
    return HistoryPage(messages=messages[1:] if has_more else messages, has_more=has_more)
