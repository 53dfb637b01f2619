"""Memo in a thread: ``ai.ask`` (a question stored and answered, or the thread's newest
message answered), ``ai.cancel``, and the REST wait for a reply."""

from __future__ import annotations

import asyncio
from uuid import UUID

from memoryd.errors import NotFound, ValidationFailed
from memoryd.handlers import messages
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.memo.reply import reply_job, reply_reference, store_outcome
from memoryd.handlers.rbac import Permission
from memoryd.protocol.ai import AskRequest, AskResult, CancelRequest, CancelResult
from memoryd.protocol.models import Message
from memoryd.protocol.requests import SendMessageRequest


async def ask(svc: Services, caller: Caller, memory_id: UUID, req: AskRequest) -> AskResult:
    """Ask Memo about the thread: with ``content``, stored first as the question; else
    Memo answers the thread's newest message that is not its own."""
    caller.require(Permission.ACCESS_AI)
    if req.content is not None:
        send = SendMessageRequest(content=req.content, client_msg_id=req.client_msg_id, ai=True)
        result = await messages.send_message(svc, caller, memory_id, send)
        return AskResult(reply_to=result.message.id, message=result.message,
                         started=result.created)  # fmt: skip
    question = await svc.store.ai.latest_question(caller.user_id, memory_id)
    if question is None:
        if await svc.store.memories.get(caller.user_id, memory_id) is None:
            raise NotFound("Memory not found")
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "content", "message": "the thread is empty: ask something"}],
        )
    await svc.ai.hooks.admit(caller.user_id)
    job = reply_job(caller.user_id, memory_id, svc.settings.ai_max_concurrent)(question)
    started = await svc.store.jobs.add(job) is not None
    if started:
        svc.wake_jobs()
    return AskResult(reply_to=question.id, message=None, started=started)


async def cancel(svc: Services, caller: Caller, req: CancelRequest) -> CancelResult:
    """Cancel replies in progress. Each one still ends as a message, ``cancelled``."""
    caller.require(Permission.ACCESS_AI)
    if (
        req.memory_id is not None
        and await svc.store.memories.get(caller.user_id, req.memory_id) is None
    ):
        raise NotFound("Memory not found")
    found = await svc.store.ai.cancel_replies(
        caller.user_id, message_id=req.reply_to, memory_id=req.memory_id
    )
    for reply in found:
        if svc.ai.replies.cancel(reply.message_id):
            continue  # streaming here: it stores what it has, marked cancelled
        if not reply.live:  # waiting, or its node died: nobody else will store it
            error = {"code": "cancelled", "message": "the reply was cancelled"}
            await store_outcome(svc, caller.user_id, reply.payload, "cancelled", "", error)
        # else another node streams it and sees the job cancelled within a poll
    return CancelResult(cancelled=[r.message_id for r in found])


async def wait_for_reply(
    svc: Services, caller: Caller, message: Message, timeout: float
) -> Message | None:
    """Memo's reply to ``message`` once stored (here or on another node), or None after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reference = reply_reference(message.id)
    while True:
        reply = await svc.store.messages.by_client_msg_id(caller.user_id, reference)
        left = deadline - loop.time()
        if reply is not None or left <= 0:
            return reply
        reply = await svc.ai.replies.wait(message.id, min(left, 0.5))
        if reply is not None:
            return reply
