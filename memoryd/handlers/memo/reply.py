"""Memo's reply in a thread: a durable ``ai.reply`` job per user message.

The job is stored with the user's message, in its transaction (dedupe key: the message
id). Any node may run it. While the answer streams, every device of the user gets
``ai.delta`` signals; the end is one stored message with ``isAiGenerated: true``,
``parentId`` = the user's message and ``clientMsgId`` = ``memo:<message id>``. That
unique reference makes a second final reply impossible, whoever runs the job and however
often it is retried. A failed or cancelled reply is stored too, with that status and an
``error`` in its metadata.

A node that dies mid-reply stops extending the lease; another node takes the job over and
streams again from the start (deltas restart at ``index`` 0). A node that shuts down
cancels its replies the same way, without storing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from memoryd.aio import wait_event
from memoryd.bridges.ai import AIError, Completion
from memoryd.errors import ClientError, RateLimited
from memoryd.handlers.context import Services
from memoryd.handlers.jobs import RetryLater
from memoryd.handlers.memo.prompt import build_prompt
from memoryd.handlers.pipeline import Send, SendPlanner
from memoryd.handlers.rbac import Permission
from memoryd.protocol.ai import AIDelta
from memoryd.protocol.models import Message
from memoryd.storage.ai import AI_REPLY, Interaction
from memoryd.storage.jobs import Job, NewJob
from memoryd.storage.messages import NewMessage

log = logging.getLogger("memoryd.ai")

REPLY_ATTEMPTS = 3
WATCH_INTERVAL = 0.5  # how often a streaming reply checks whether it was cancelled elsewhere
DEADLINE = 300.0  # one attempt may stream this long at most
FAILED_TEXT = "Memo could not answer this time."
CANCELLED_TEXT = "Reply cancelled."


def reply_reference(message_id: UUID) -> str:
    """The ``clientMsgId`` of Memo's reply to ``message_id``: unique per user."""
    return f"memo:{message_id}"


def reply_job(
    user_id: UUID, memory_id: UUID, max_active: int, *, skip_over_cap: bool = False
) -> Callable[[Message], NewJob]:
    """The ``ai.reply`` job of a message being stored: refused past ``max_active``, or
    with ``skip_over_cap`` left out (the message is stored without a reply)."""

    def build(message: Message) -> NewJob:
        return NewJob(
            kind=AI_REPLY,
            payload={"memoryId": str(memory_id), "messageId": str(message.id)},
            user_id=user_id,
            dedupe_key=str(message.id),
            max_attempts=REPLY_ATTEMPTS,
            max_active=max_active,
            skip_over_cap=skip_over_cap,
        )

    return build


# The keys of a memory's metadata `send_planner` reads (given to `add_planner`).
MEMORY_METADATA_KEYS = ("memoAnswers",)


def send_planner(svc: Services) -> SendPlanner:
    """The send pipeline's planner for Memo: a reply job with ``ai: true``, or in a
    thread whose memory has ``metadata.memoAnswers`` (for a caller who may use AI).

    The reply counts against the caller's ``ai`` rate limit only once the message row is
    written in the send's transaction: a replayed resend, or a send another planner or
    check refused, costs nothing. An asked-for reply past a limit refuses the send (the
    client can resend without ``ai``); in a thread Memo answers by itself, the user's
    message is stored anyway and Memo sits that one out."""

    async def plan(send: Send) -> None:
        caller, asked = send.caller, send.request.ai
        if asked:
            caller.require(Permission.ACCESS_AI)
        elif not caller.may(Permission.ACCESS_AI):
            return
        else:
            metadata = send.context.memory_metadata
            if not (isinstance(metadata, dict) and metadata.get("memoAnswers") is True):
                return
        build = reply_job(
            caller.user_id, send.memory_id, svc.settings.ai_max_concurrent,
            skip_over_cap=not asked,
        )  # fmt: skip

        async def admitted(message: Message) -> NewJob | None:
            try:
                await svc.ai.hooks.admit(caller.user_id)
            except RateLimited:
                if asked:
                    raise
                log.info("memo skips a message over the ai limit",
                         extra={"user": str(caller.user_id)})  # fmt: skip
                return None
            return build(message)

        send.add_job(admitted)

    return plan


@dataclass
class _Outcome:
    status: str  # sent | failed | cancelled
    text: str
    completion: Completion | None = None
    error: AIError | None = None


def job_handler(svc: Services) -> Callable[[Job], Awaitable[Any]]:
    async def run(job: Job) -> Any:
        try:
            return await run_reply(svc, job)
        except (RetryLater, asyncio.CancelledError):
            raise
        except Exception as exc:
            if job.attempts >= job.max_attempts:  # the last try: the user must see it failed
                error = {"code": "internal", "message": "internal error"}
                with contextlib.suppress(Exception):
                    await store_outcome(svc, job.user_id, job.payload, "failed", "", error)
            raise exc

    return run


async def run_reply(svc: Services, job: Job) -> dict[str, Any]:
    assert job.user_id is not None
    user_id = job.user_id
    memory_id, message_id = UUID(job.payload["memoryId"]), UUID(job.payload["messageId"])
    done = await svc.store.messages.by_client_msg_id(user_id, reply_reference(message_id))
    if done is not None:  # an earlier attempt finished: never a second reply
        svc.ai.replies.resolve(message_id, done)
        return {"reply": str(done.id), "status": done.status}
    question = await svc.store.messages.get(user_id, message_id)
    memory = await svc.store.memories.get(user_id, memory_id)
    if question is None or memory is None:
        return {"skipped": "the message or its memory was deleted"}
    prompt, _ = await build_prompt(
        svc, user_id, question.content, memory=memory, before_seq=question.seq
    )
    started = time.monotonic()
    with svc.ai.replies.running(message_id) as cancelled:
        outcome = await _stream(svc, job, memory_id, message_id, prompt, cancelled)
    seconds = time.monotonic() - started
    provider = svc.ai.provider
    completion = outcome.completion
    model = completion.model if completion else provider.model
    error = outcome.error
    await svc.store.ai.record(
        Interaction(
            user_id=user_id,
            memory_id=memory_id,
            kind="reply",
            input={"replyTo": str(message_id), "question": question.content[:10_000]},
            output={"text": outcome.text[:10_000]} if outcome.text else None,
            model=model,
            tokens=completion.total_tokens if completion else 0,
            processing_ms=round(seconds * 1000),
            status="completed" if outcome.status == "sent" else outcome.status,
            error=str(error) if error else None,
        )
    )
    svc.ai.hooks.observe(model, _metric_status(outcome.status), seconds)
    if error is not None and error.retryable and job.attempts < job.max_attempts:
        raise RetryLater(str(error), delay=error.retry_after or float(job.attempts))
    metadata: dict[str, Any] = {
        "model": model,
        "tokensUsed": completion.total_tokens if completion else 0,
        "processingTime": round(seconds * 1000),
    }
    if outcome.status == "cancelled":
        metadata["error"] = {"code": "cancelled", "message": "the reply was cancelled"}
    elif error is not None:
        metadata["error"] = {"code": "ai_failed", "message": str(error)}
    reply = await store_outcome(
        svc, user_id, job.payload, outcome.status, outcome.text, None, metadata
    )
    if reply is None:
        return {"skipped": "the message or its memory was deleted"}
    return {"reply": str(reply.id), "status": reply.status}


def _metric_status(status: str) -> str:
    return {"sent": "success", "failed": "error"}.get(status, status)


async def _stream(
    svc: Services,
    job: Job,
    memory_id: UUID,
    message_id: UUID,
    prompt: Any,
    cancelled: asyncio.Event,
) -> _Outcome:
    """Run the provider, signalling each delta; stop early when the reply is cancelled
    (here or, through the job's status, on another node)."""
    assert job.user_id is not None
    user_id = job.user_id
    parts: list[str] = []

    async def on_delta(text: str) -> None:
        data = AIDelta(memory_id=memory_id, reply_to=message_id, index=len(parts), delta=text)
        parts.append(text)
        svc.events.signal(user_id, "ai.delta", data)

    answer = asyncio.create_task(svc.ai.provider.complete(prompt, on_delta))
    watcher = asyncio.create_task(_watch(svc, job.id, cancelled))
    try:
        await asyncio.wait({answer, watcher}, timeout=DEADLINE,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        watcher.cancel()
        if not answer.done():
            answer.cancel()
        await asyncio.gather(answer, watcher, return_exceptions=True)
    if cancelled.is_set():
        return _Outcome("cancelled", "".join(parts).strip() or CANCELLED_TEXT)
    if answer.cancelled():
        error = AIError(f"no complete answer within {DEADLINE:g} s", partial="".join(parts))
        return _Outcome("failed", error.partial.strip() or FAILED_TEXT, error=error)
    exc = answer.exception()
    if isinstance(exc, AIError):
        return _Outcome("failed", exc.partial.strip() or FAILED_TEXT, error=exc)
    if exc is not None:
        raise exc
    completion = answer.result()
    text = completion.text.strip()
    if not text:
        return _Outcome("failed", FAILED_TEXT, completion, AIError("the answer was empty"))
    return _Outcome("sent", text, completion)


async def _watch(svc: Services, job_id: UUID, cancelled: asyncio.Event) -> None:
    while not cancelled.is_set():
        await wait_event(cancelled, WATCH_INTERVAL)
        if not cancelled.is_set() and await svc.store.ai.job_status(job_id) == "cancelled":
            cancelled.set()


async def store_outcome(
    svc: Services,
    user_id: UUID | None,
    payload: Any,
    status: str,
    text: str,
    error: dict[str, str] | None,
    metadata: dict[str, Any] | None = None,
) -> Message | None:
    """Store Memo's final message for the job's user message (at most one ever: a second
    attempt gets the first one back) and publish it. None when its thread is gone."""
    assert user_id is not None
    memory_id, message_id = UUID(payload["memoryId"]), UUID(payload["messageId"])
    metadata = dict(metadata or {})
    if error is not None:
        metadata["error"] = error
    if status == "cancelled" and not text:
        text = CANCELLED_TEXT
    limit = svc.settings.max_content_chars
    try:
        reply, event = await svc.store.messages.create(
            user_id,
            memory_id,
            NewMessage(
                content=(text or FAILED_TEXT)[:limit],
                metadata=metadata,
                parent_id=message_id,
                client_msg_id=reply_reference(message_id),
                is_ai_generated=True,
                status=status,
            ),
            plan=svc.pipeline.server_plan(),
        )
    except ClientError as exc:  # the thread or the question was deleted meanwhile
        log.info("AI reply not stored: %s", exc.message)
        return None
    svc.publish(user_id, event)
    svc.ai.replies.resolve(message_id, reply)
    return reply
