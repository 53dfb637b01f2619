"""Memo's tools: the seed's ``/api/ai/*`` operations (chat, categorize, summarize).

Every AI call is recorded in ``ai_interactions`` and counted in the AI metrics. Access
needs ``access:ai`` (premium, admin). Starting a reply counts against the user's ``ai``
rate limit (the REST routes count their calls themselves) and against the per-user cap
on AI work in progress (``MEMORYD_AI_MAX_CONCURRENT``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from memoryd.bridges.ai import AIError, Completion
from memoryd.bridges.ai.text import cosine, word_count
from memoryd.errors import ClientError, NotFound, ValidationFailed
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.memo.prompt import build_prompt
from memoryd.handlers.rbac import Permission
from memoryd.protocol.ai import (
    AIMetadata,
    CategorizeRequest,
    CategorizeResponse,
    CategoryScore,
    ChatRequest,
    ChatResponse,
    SummarizeRequest,
    SummarizeResponse,
)
from memoryd.storage.ai import Interaction

T = TypeVar("T")
_SOFTMAX_TEMPERATURE = 0.05  # cosine gaps of 0.05 between categories mean a factor e
_ALTERNATIVES = 4
_CONTEXT_CHARS = 4000
# Without log-probabilities, a rough confidence from how the answer ended.
_FINISH_CONFIDENCE = {"stop": 0.7, "length": 0.4}


class AIFailed(ClientError):
    """The AI server failed: 503 when retrying later may help, else 502."""

    status = 502
    code = "ai_failed"


def _ai_error(error: AIError) -> ClientError:
    if error.retryable:
        return AIFailed(
            f"The AI service is unavailable: {error}",
            code="ai_unavailable",
            status=503,
            details={"retryAfter": error.retry_after},
        )
    return AIFailed(f"The AI service failed: {error}")


def _metadata(model: str, tokens: int, ms: int) -> AIMetadata:
    return AIMetadata(tokens_used=tokens, processing_time=ms, model=model)


async def _call(
    svc: Services,
    caller: Caller,
    kind: str,
    given: Any,
    call: Callable[[], Awaitable[T]],
    output: Callable[[T], tuple[Any, str, int]],
    memory_id: UUID | None = None,
) -> tuple[T, int]:
    """Run one AI call inside the caller's concurrency slot; record it and its metrics.

    ``output`` gives the recorded output, the model and the tokens of a result. Returns
    the result and the milliseconds it took; an `AIError` becomes 502/503.
    """
    provider = svc.ai.provider
    with svc.ai.slot(caller.user_id, svc.settings.ai_max_concurrent):
        started = time.monotonic()
        try:
            result = await call()
        except AIError as exc:
            seconds = time.monotonic() - started
            svc.ai.hooks.observe(provider.model, "error", seconds)
            failed = Interaction(
                caller.user_id, kind, given, None, provider.model, 0,
                round(seconds * 1000), "failed", str(exc), memory_id,
            )  # fmt: skip
            await svc.store.ai.record(failed)
            raise _ai_error(exc) from None
    seconds = time.monotonic() - started
    recorded, model, tokens = output(result)
    svc.ai.hooks.observe(model, "success", seconds)
    ms = round(seconds * 1000)
    done = Interaction(
        caller.user_id, kind, given, recorded, model, tokens, ms, "completed", None, memory_id
    )
    await svc.store.ai.record(done)
    return result, ms


def _check_length(svc: Services, field: str, text: str) -> None:
    limit = svc.settings.max_content_chars
    if len(text) > limit:
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": field, "message": f"Expected `str` of length <= {limit}"}],
        )


# -- the seed's /api/ai operations ------------------------------------------------------------


def _context_text(context: Any) -> str | None:
    if context is None:
        return None
    text = context if isinstance(context, str) else msgspec.json.encode(context).decode()
    return text[:_CONTEXT_CHARS]


def _confidence(completion: Completion) -> float:
    if completion.confidence is not None:
        return completion.confidence
    return _FINISH_CONFIDENCE.get(completion.finish_reason or "", 0.3)


async def chat(svc: Services, caller: Caller, req: ChatRequest) -> ChatResponse:
    caller.require(Permission.ACCESS_AI)
    _check_length(svc, "message", req.message)
    memory = None
    if req.memory_id is not None:
        memory = await svc.store.memories.get(caller.user_id, req.memory_id)
        if memory is None:
            raise NotFound("Memory not found")
    prompt, titles = await build_prompt(
        svc, caller.user_id, req.message, memory=memory,
        extra_context=_context_text(req.context), logprobs=True,
    )  # fmt: skip
    given = {"message": req.message, "memoryId": req.memory_id, "context": req.context}
    completion, ms = await _call(
        svc, caller, "chat", given,
        lambda: svc.ai.provider.complete(prompt),
        lambda c: ({"response": c.text}, c.model, c.total_tokens),
        memory_id=req.memory_id,
    )  # fmt: skip
    return ChatResponse(
        response=completion.text,
        confidence=_confidence(completion),
        suggestions=titles[:3],
        metadata=_metadata(completion.model, completion.total_tokens, ms),
    )


async def categorize(svc: Services, caller: Caller, req: CategorizeRequest) -> CategorizeResponse:
    """The category whose name and memories are most similar to ``content`` (cosine
    similarity of embeddings), with a softmax over the similarities as confidence."""
    caller.require(Permission.ACCESS_AI)
    profiles = {p.name.lower(): p for p in await svc.store.ai.category_profiles(caller.user_id)}
    names: list[str] = []
    for name in req.existing_categories or [p.name for p in profiles.values()]:
        if name.strip() and name.lower() not in {n.lower() for n in names}:
            names.append(name.strip())
    if not names:
        raise ValidationFailed(
            "Validation failed",
            details=[{"field": "existingCategories", "message": "no categories to choose from"}],
        )
    texts = [req.content]
    for name in names:
        profile = profiles.get(name.lower())
        extra = f" {profile.description or ''} {profile.sample}" if profile else ""
        texts.append(f"{name}{extra}")
    embeddings, ms = await _call(
        svc, caller, "categorize", {"content": req.content[:10_000], "categories": names},
        lambda: svc.ai.provider.embed(texts),
        lambda e: (None, e.model, e.tokens),
    )  # fmt: skip
    content, *others = embeddings.vectors
    similarities = [cosine(content, v) for v in others]
    top = max(similarities)
    weights = [math.exp((s - top) / _SOFTMAX_TEMPERATURE) for s in similarities]
    total = sum(weights)
    ranked = sorted(
        ((round(w / total, 3), name) for w, name in zip(weights, names, strict=True)),
        key=lambda r: -r[0],
    )
    (confidence, best), rest = ranked[0], ranked[1 : 1 + _ALTERNATIVES]
    return CategorizeResponse(
        suggested_category=best,
        confidence=confidence,
        alternative_categories=[CategoryScore(category=n, confidence=c) for c, n in rest],
        metadata=_metadata(embeddings.model, embeddings.tokens, ms),
    )


async def summarize(svc: Services, caller: Caller, req: SummarizeRequest) -> SummarizeResponse:
    caller.require(Permission.ACCESS_AI)
    style: Any = req.style
    summary, ms = await _call(
        svc, caller, "summarize",
        {"content": req.content[:10_000], "maxLength": req.max_length, "style": req.style},
        lambda: svc.ai.provider.summarize(req.content, req.max_length, style),
        lambda s: ({"summary": s.summary, "keyPoints": s.key_points}, s.model, s.tokens),
    )  # fmt: skip
    return SummarizeResponse(
        summary=summary.summary,
        key_points=summary.key_points,
        word_count=word_count(summary.summary),
        metadata=_metadata(summary.model, summary.tokens, ms),
    )
