"""The send pipeline: features plan a message's send, edit and delete by registration.

A send runs in one storage transaction (`MessageStore.create`). Storage first takes the
per-memory seq and checks the ``clientMsgId``: a resend gets the stored message back and
no planner runs (a replay is never refused by checks meant for new work, and starts no
job twice). Otherwise every registered planner runs, in registration order, with a
`Send`. A planner may

- refuse: raise a `ClientError` (nothing is stored);
- adjust the message: ``send.message = dataclasses.replace(send.message, status=...)``;
- add durable jobs: ``send.add_job(factory)``, a factory called with the stored message
  inside the transaction (it may still refuse, e.g. a rate limit spent only here);
- ask storage for an in-transaction check or side effect: ``send.add_step(step)``, a
  storage-defined `TxStep` run right after the message row is written.

Listeners (`on_create`, `on_edit`, `on_delete`) get a `Change` with the message (as
stored, after the edit, or as it was before the delete) and add jobs or steps to that
change's transaction. ``on_create`` also runs for the messages the server makes (Memo's
replies, WhatsApp inbound), which store with `MessagePipeline.server_plan`.

A plain send takes one round trip: before storage runs, `MessagePipeline.plain` runs the
planners on `PLAIN_CONTEXT` (no memory metadata, no WhatsApp thread); when none of them
refuses, adjusts the message or adds a job or step, and no ``on_create`` listener is
registered, storage writes the send in one statement, provided the memory really is
plain: no WhatsApp thread and none of the metadata keys a planner says it reads
(``add_planner(..., reads=("memoAnswers",))``). Else the planners run again in the
send's transaction on the real context. So a planner must be a pure function of the
`Send` (its side effects belong in job factories) and must declare the memory-metadata
keys it looks at.

Planners and listeners are registered at start-up, like job handlers::

    svc.pipeline.add_planner("whatsapp", whatsapp.plan_outbound)
    svc.pipeline.add_planner("memo", memo.reply.send_planner(svc))
    svc.pipeline.on_delete("files", files.cleanup_listener(svc))

See docs/architecture.md §6.1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from uuid import UUID

from memoryd.errors import ClientError
from memoryd.handlers.caller import Caller
from memoryd.protocol.models import Message
from memoryd.protocol.requests import SendMessageRequest
from memoryd.storage.jobs import NewJob
from memoryd.storage.messages import (
    PLAIN_CONTEXT,
    ChangeHook,
    ChangePlan,
    JobFactory,
    NewMessage,
    PlainSend,
    Planner,
    SendContext,
    SendPlan,
    TxStep,
)


@dataclass
class Send:
    """One new message being stored, as the planners see it (inside its transaction)."""

    caller: Caller
    memory_id: UUID
    request: SendMessageRequest
    context: SendContext  # read in the send's transaction: memory metadata, WhatsApp thread
    message: NewMessage  # what will be stored; planners replace it to adjust it
    jobs: list[JobFactory] = field(default_factory=list)
    steps: list[TxStep] = field(default_factory=list)
    # True on the run before storage (`MessagePipeline.plain`), whose plan is dropped
    # unless it planned nothing: no send is stored or refused by it.
    preview: bool = False

    def add_job(self, job: NewJob | JobFactory) -> None:
        """Enqueue a job with the message: a `NewJob`, or a factory given the stored
        message (async; it may return None to add nothing, or raise to refuse)."""
        if isinstance(job, NewJob):
            fixed = job

            async def factory(message: Message) -> NewJob:
                return fixed

            self.jobs.append(factory)
        else:
            self.jobs.append(job)

    def add_step(self, step: TxStep) -> None:
        self.steps.append(step)

    def plan(self) -> SendPlan:
        return SendPlan(message=self.message, jobs=tuple(self.jobs), steps=tuple(self.steps))


@dataclass
class Change:
    """A created, edited or deleted message, as its listeners see it (inside its
    transaction). ``caller`` is None for a message the server makes itself (Memo's
    reply, a WhatsApp inbound message)."""

    caller: Caller | None
    message: Message  # as stored, after the edit, or as it was before the delete
    jobs: list[NewJob] = field(default_factory=list)
    steps: list[TxStep] = field(default_factory=list)

    def add_job(self, job: NewJob) -> None:
        self.jobs.append(job)

    def add_step(self, step: TxStep) -> None:
        self.steps.append(step)

    def plan(self) -> ChangePlan:
        return ChangePlan(jobs=list(self.jobs), steps=list(self.steps))


SendPlanner = Callable[[Send], Awaitable[None]]
ChangeListener = Callable[[Change], Awaitable[None]]


Hook = TypeVar("Hook")


class MessagePipeline:
    """The registered planners of sends and listeners of edits and deletes."""

    def __init__(self) -> None:
        self._planners: dict[str, SendPlanner] = {}
        self._on_create: dict[str, ChangeListener] = {}
        self._on_edit: dict[str, ChangeListener] = {}
        self._on_delete: dict[str, ChangeListener] = {}
        self._reads: tuple[str, ...] = ()

    def add_planner(self, name: str, planner: SendPlanner, *, reads: tuple[str, ...] = ()) -> None:
        """Run ``planner`` on every new message, after the ones registered before it.
        ``reads``: the keys of the memory's metadata it looks at (see the module doc)."""
        _add(self._planners, name, planner)
        self._reads += tuple(k for k in reads if k not in self._reads)

    def on_create(self, name: str, listener: ChangeListener) -> None:
        """Run ``listener`` on every message stored: a user's send (after its planners)
        and a message the server makes (Memo's replies, WhatsApp inbound)."""
        _add(self._on_create, name, listener)

    def on_edit(self, name: str, listener: ChangeListener) -> None:
        _add(self._on_edit, name, listener)

    def on_delete(self, name: str, listener: ChangeListener) -> None:
        _add(self._on_delete, name, listener)

    @property
    def planners(self) -> tuple[str, ...]:
        return tuple(self._planners)

    def listens(self, change: Literal["create", "edit", "delete"]) -> bool:
        """Whether any listener is registered for ``change`` (else storage skips the
        hook and its extra read)."""
        table = {"create": self._on_create, "edit": self._on_edit, "delete": self._on_delete}
        return bool(table[change])

    async def plain(self, send: Send) -> PlainSend | None:
        """Run the planners on `PLAIN_CONTEXT`: a `PlainSend` when they leave the send
        alone (storage may then write it in one statement), else None. A refusal here
        is not final (the real context may differ, or the send be a replay): it only
        means the transaction path."""
        if self._on_create:
            return None
        original = send.message
        send.context, send.preview = PLAIN_CONTEXT, True
        try:
            for planner in self._planners.values():
                await planner(send)
        except ClientError:
            return None
        if send.message is not original or send.jobs or send.steps:
            return None
        return PlainSend(metadata_keys=self._reads)

    async def plan_send(self, send: Send) -> SendPlan:
        for planner in self._planners.values():
            await planner(send)
        plan = send.plan()
        plan.hooks = self.creation_hooks(send.caller)
        return plan

    def creation_hooks(self, caller: Caller | None) -> tuple[ChangeHook, ...]:
        """The storage hooks that run the ``on_create`` listeners for a new message."""
        if not self._on_create:
            return ()

        async def hook(message: Message) -> ChangePlan:
            return await self.created(Change(caller=caller, message=message))

        return (hook,)

    def server_plan(self) -> Planner:
        """The ``plan`` for `MessageStore.create` of a message the server makes: no send
        planner (it is no user's send), only the ``on_create`` listeners."""
        hooks = self.creation_hooks(None)

        async def plan(context: SendContext, new: NewMessage) -> SendPlan:
            return SendPlan(message=new, hooks=hooks)

        return plan

    async def created(self, change: Change) -> ChangePlan:
        for listener in self._on_create.values():
            await listener(change)
        return change.plan()

    async def edited(self, change: Change) -> ChangePlan:
        for listener in self._on_edit.values():
            await listener(change)
        return change.plan()

    async def deleted(self, change: Change) -> ChangePlan:
        for listener in self._on_delete.values():
            await listener(change)
        return change.plan()


def _add(table: dict[str, Hook], name: str, hook: Hook) -> None:
    if name in table:
        raise ValueError(f"{name!r} is registered already")
    table[name] = hook
