"""What every AI provider offers Memo, and the values that cross that boundary.

A provider answers a `Prompt` (streaming deltas to a callback when one is given),
embeds texts and summarises text. Two exist: the OpenAI-compatible one (any server that
speaks ``/v1/chat/completions`` and ``/v1/embeddings``) and the local responder, which
needs no model: it quotes and ranks the user's own words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from uuid import UUID

MEMO = (
    "You are Memo, a personal AI brain assistant. Help the user manage their memories "
    "intelligently."
)
SYSTEM_PROMPT = MEMO + " Context: "  # the seed plan's prompt; the context lines follow
LOCAL_MODEL = "memoryd-local"

DeltaSink = Callable[[str], Awaitable[None]]
SummaryStyle = Literal["brief", "detailed", "bullet-points"]


@dataclass(frozen=True)
class Turn:
    """One earlier message of the thread, as the model sees it."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Passage:
    """A piece of the user's own writing retrieved as context for an answer."""

    source: str  # a memory's title, or "this thread"
    text: str
    memory_id: UUID | None = None
    score: float = 0.0


@dataclass(frozen=True)
class Prompt:
    question: str
    history: tuple[Turn, ...] = ()  # the thread before the question, oldest first
    passages: tuple[Passage, ...] = ()
    extra_context: str | None = None  # context a client sent along (``/api/ai/chat``)
    user: str | None = None  # an opaque end-user id for the provider's abuse tracking
    max_tokens: int = 1000
    temperature: float = 0.7
    logprobs: bool = False  # ask for token log-probabilities (a confidence measure)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    confidence: float | None = None  # 0..1 when the provider can say

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    model: str
    tokens: int = 0


@dataclass(frozen=True)
class Summary:
    summary: str
    key_points: list[str]
    model: str
    tokens: int = 0


class AIError(Exception):
    """A call failed. ``retryable``: the same call may work later (429, 5xx, timeouts, a
    cut-off stream); ``retry_after``: how long the server asked us to wait; ``partial``:
    the text streamed before the failure."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        partial: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.partial = partial


class AIProvider(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def is_local(self) -> bool: ...

    async def complete(self, prompt: Prompt, on_delta: DeltaSink | None = None) -> Completion:
        """Answer ``prompt``; with ``on_delta``, stream the text to it as it comes."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings: ...

    async def summarize(self, text: str, max_words: int, style: SummaryStyle) -> Summary: ...

    async def aclose(self) -> None: ...


def render_context(prompt: Prompt) -> str:
    """The context block of the seed's system prompt: one line per retrieved passage."""
    lines = [f"[{p.source}] {p.text}" for p in prompt.passages]
    if prompt.extra_context:
        lines.append(f"[context from the app] {prompt.extra_context}")
    return "\n".join(lines)


def render_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The chat messages for an OpenAI-compatible server: system, the thread, the question."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT + render_context(prompt)}]
    messages += [{"role": t.role, "content": t.content} for t in prompt.history]
    messages.append({"role": "user", "content": prompt.question})
    return messages
