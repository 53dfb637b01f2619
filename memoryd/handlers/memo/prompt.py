"""The context of one answer: the thread's recent messages within a token budget, the
memory itself, and the most relevant of the user's other memories (handlers/search)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from memoryd.bridges.ai import Passage, Prompt, Turn
from memoryd.bridges.ai.text import estimate_tokens
from memoryd.handlers import search
from memoryd.handlers.context import Services
from memoryd.protocol.models import Memory, Message

HISTORY_TOKENS = 3000  # the thread's recent messages, newest first until the budget is spent
RELATED_TOKENS = 1500  # passages of other memories
RELATED_LIMIT = 5
_HISTORY_ROWS = 100
_REPLY_TOKENS = 1000


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def memory_text(memory: Memory) -> str:
    parts = [memory.title or "", memory.description or "", " ".join(memory.tags)]
    parts += _strings(memory.content)
    return " ".join(p for p in parts if p).strip()


def _turns(messages: list[Message], budget: int) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    for message in reversed(messages):  # newest first, so the budget keeps the latest
        if message.status != "sent":
            continue  # failed or cancelled replies are not part of the conversation
        cost = estimate_tokens(message.content)
        if cost > budget:
            break
        budget -= cost
        turns.append(Turn("assistant" if message.is_ai_generated else "user", message.content))
    return tuple(reversed(turns))


async def build_prompt(
    svc: Services,
    user_id: UUID,
    question: str,
    *,
    memory: Memory | None = None,
    before_seq: int | None = None,
    extra_context: str | None = None,
    logprobs: bool = False,
) -> tuple[Prompt, list[str]]:
    """The prompt for ``question`` and the titles of the related memories it drew on.

    With ``memory``, its messages before ``before_seq`` (all, when None) are the history.
    """
    history: tuple[Turn, ...] = ()
    passages: list[Passage] = []
    if memory is not None:
        rows = await svc.store.messages.history(user_id, memory.id, before_seq, _HISTORY_ROWS)
        history = _turns(rows, HISTORY_TOKENS)
        own = memory_text(memory)
        if own:
            passages.append(Passage(source=memory.title or "this memory", text=own[:2000],
                                    memory_id=memory.id))  # fmt: skip
    budget = RELATED_TOKENS
    titles: list[str] = []
    related = await search.related(
        svc, user_id, question, memory.id if memory else None, RELATED_LIMIT
    )
    for snippet in related:
        cost = estimate_tokens(snippet.text)
        if cost > budget:
            continue
        budget -= cost
        title = snippet.title or "untitled memory"
        passages.append(Passage(source=title, text=snippet.text, memory_id=snippet.memory_id,
                                score=snippet.rank))  # fmt: skip
        if snippet.title and snippet.title not in titles:
            titles.append(snippet.title)
    prompt = Prompt(
        question=question,
        history=history,
        passages=tuple(passages),
        extra_context=extra_context,
        user=str(user_id),
        max_tokens=_REPLY_TOKENS,
        logprobs=logprobs,
    )
    return prompt, titles
