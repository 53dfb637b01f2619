"""What Memo's handlers need at run time, handed over through `Services.ai`.

The provider (OpenAI-compatible or local), the server's hooks (the per-user ``ai`` rate
limit and the Prometheus AI metrics, so handlers never import the server), the replies
streaming on this node, and the per-user count of AI calls in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from memoryd.bridges.ai import AIProvider, LocalProvider
from memoryd.errors import RateLimited
from memoryd.protocol.models import Message


class AIHooks(Protocol):
    async def admit(self, user_id: UUID) -> None:
        """Count one AI request against the user's ``ai`` limit; raise `RateLimited`."""
        ...

    def observe(self, model: str, status: str, seconds: float) -> None:
        """Record one AI call: ``ai_requests_total`` and ``ai_request_duration_seconds``."""
        ...


class NoHooks:
    """No limit, no metrics (the CLI, unit tests)."""

    async def admit(self, user_id: UUID) -> None:
        return None

    def observe(self, model: str, status: str, seconds: float) -> None:
        return None


class ReplyTracker:
    """Replies streaming on this node, and REST callers waiting for a reply.

    Cancelling a reply that runs here is immediate; one running on another node notices
    its job's ``cancelled`` status within a poll interval.
    """

    def __init__(self) -> None:
        self._cancel: dict[UUID, asyncio.Event] = {}
        self._waiters: dict[UUID, set[asyncio.Future[Message]]] = {}

    @contextlib.contextmanager
    def running(self, message_id: UUID) -> Iterator[asyncio.Event]:
        event = self._cancel[message_id] = asyncio.Event()
        try:
            yield event
        finally:
            if self._cancel.get(message_id) is event:
                del self._cancel[message_id]

    def cancel(self, message_id: UUID) -> bool:
        event = self._cancel.get(message_id)
        if event is None:
            return False
        event.set()
        return True

    def resolve(self, message_id: UUID, reply: Message) -> None:
        for future in self._waiters.pop(message_id, ()):
            if not future.done():
                future.set_result(reply)

    async def wait(self, message_id: UUID, timeout: float) -> Message | None:
        """The reply to ``message_id`` if it is stored on this node within ``timeout``."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(message_id, set())
        waiters.add(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(message_id) is waiters:
                del self._waiters[message_id]


@dataclass
class AIRuntime:
    provider: AIProvider = field(default_factory=LocalProvider)
    hooks: AIHooks = field(default_factory=NoHooks)
    replies: ReplyTracker = field(default_factory=ReplyTracker)
    _busy: dict[UUID, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def slot(self, user_id: UUID, cap: int) -> Iterator[None]:
        """One of the user's ``cap`` concurrent AI calls on this node, or `RateLimited`."""
        busy = self._busy.get(user_id, 0)
        if busy >= cap:
            raise RateLimited(
                f"at most {cap} AI requests may be in progress at once",
                retry_after=1.0,
                details={"limit": "ai.concurrent", "retryAfter": 1},
            )
        self._busy[user_id] = busy + 1
        try:
            yield
        finally:
            left = self._busy[user_id] - 1
            if left:
                self._busy[user_id] = left
            else:
                del self._busy[user_id]
