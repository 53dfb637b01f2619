"""Memo on any OpenAI-compatible server, through the official ``openai`` SDK.

The SDK's own retries are off (``max_retries=0``) so this module owns the policy:

- 429, 408, 409, 5xx, timeouts and dropped connections are retried up to ``max_retries``
  times. The wait is the server's ``Retry-After`` (or ``retry-after-ms``) when it sends
  one, else exponential backoff with jitter (0.5 s, 1 s, 2 s ... up to 8 s).
- A ``Retry-After`` longer than ``max_retry_wait`` is not waited out here: the error
  carries it, and a durable job retries after that long instead.
- A stream that fails after text went out is not retried here (the text already reached
  the devices); the error carries the partial text.

``timeout`` bounds each wait on the server (connect, and every read, so also the silence
between two streamed chunks).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI

from memoryd.bridges.ai.base import (
    MEMO,
    AIError,
    Completion,
    DeltaSink,
    Embeddings,
    Prompt,
    Summary,
    SummaryStyle,
    render_messages,
)
from memoryd.bridges.ai.text import estimate_tokens, truncate_words

T = TypeVar("T")
_RETRY_STATUS = frozenset({408, 409, 429})
_STYLE = {
    "brief": "in one or two sentences",
    "detailed": "in a few paragraphs that keep the important details",
    "bullet-points": "as a list of short bullet points, one per line starting with '- '",
}
_KEY_POINTS = re.compile(r"^\s*\**key points\**\s*:?\s*\**\s*$", re.IGNORECASE | re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)")


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _classify(exc: Exception) -> AIError:
    if isinstance(exc, AIError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return AIError("the AI server did not answer in time", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return AIError("the connection to the AI server failed", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return AIError(
            f"the AI server answered HTTP {status}",
            retryable=status in _RETRY_STATUS or status >= 500,
            retry_after=parse_retry_after(exc.response.headers),
            status=status,
        )
    if isinstance(exc, openai.OpenAIError):
        return AIError(f"the AI server's answer could not be used: {type(exc).__name__}")
    raise exc


class _Progress:
    """What one streamed attempt produced so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OpenAICompatProvider:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        chat_model: str,
        embedding_model: str,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_retry_wait: float = 30.0,
    ) -> None:
        # A local server may need no key, but the SDK insists on one.
        self._client = AsyncOpenAI(
            api_key=api_key or "not-needed", base_url=base_url, timeout=timeout, max_retries=0
        )
        self.chat_model = chat_model
        self.embedding_model = embedding_model
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait

    @property
    def model(self) -> str:
        return self.chat_model

    @property
    def is_local(self) -> bool:
        return False

    async def aclose(self) -> None:
        await self._client.close()

    # -- retries ----------------------------------------------------------------------

    async def _with_retries(self, attempt: Callable[[_Progress], Awaitable[T]]) -> T:
        for n in range(self.max_retries + 1):
            progress = _Progress()
            try:
                return await attempt(progress)
            except Exception as exc:
                error = _classify(exc)
            if progress.parts:  # text went out already: the caller decides what to do
                error.partial = progress.text
                raise error
            if not error.retryable or n == self.max_retries:
                raise error
            delay = error.retry_after
            if delay is None:
                delay = min(8.0, 0.5 * 2**n) * random.uniform(0.75, 1.0)
            elif delay > self.max_retry_wait:
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- chat -------------------------------------------------------------------------

    def _chat_args(self, prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.chat_model,
            "messages": messages,
            "max_tokens": prompt.max_tokens,
            "temperature": prompt.temperature,
        }
        if prompt.user:
            args["user"] = prompt.user
        return args

    async def complete(self, prompt: Prompt, on_delta: DeltaSink | None = None) -> Completion:
        args = self._chat_args(prompt, render_messages(prompt))
        if on_delta is None:
            if prompt.logprobs:
                args["logprobs"] = True
            return await self._with_retries(lambda _: self._complete_once(args))
        return await self._with_retries(
            lambda progress: self._stream_once(args, on_delta, progress)
        )

    async def _complete_once(self, args: dict[str, Any]) -> Completion:
        response = await self._client.chat.completions.create(**args)
        if not response.choices:
            raise AIError("the AI server sent no answer", retryable=True)
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            model=response.model or self.chat_model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            confidence=_confidence(choice),
        )

    async def _stream_once(
        self, args: dict[str, Any], on_delta: DeltaSink, progress: _Progress
    ) -> Completion:
        stream = await self._client.chat.completions.create(
            **args, stream=True, stream_options={"include_usage": True}
        )
        model, finish, usage = self.chat_model, None, None
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:  # the last chunk, with no choices
                    usage = chunk.usage
                for choice in chunk.choices:
                    content = choice.delta.content if choice.delta else None
                    if content:
                        progress.parts.append(content)
                        await on_delta(content)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        if finish is None:
            raise AIError("the AI server's stream ended before the answer was complete",
                          retryable=True)  # fmt: skip
        text = progress.text
        return Completion(
            text=text,
            model=model,
            # Servers that ignore include_usage send none: estimate rather than claim 0.
            prompt_tokens=usage.prompt_tokens if usage else estimate_tokens(str(args)),
            completion_tokens=usage.completion_tokens if usage else estimate_tokens(text),
            finish_reason=finish,
        )

    # -- embeddings and summaries -------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        async def once(_: _Progress) -> Embeddings:
            response = await self._client.embeddings.create(
                model=self.embedding_model, input=list(texts)
            )
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(texts):
                raise AIError("the AI server returned the wrong number of embeddings")
            usage = response.usage
            return Embeddings(
                vectors=[list(d.embedding) for d in data],
                model=response.model or self.embedding_model,
                tokens=usage.total_tokens if usage else 0,
            )

        return await self._with_retries(once)

    async def summarize(self, text: str, max_words: int, style: SummaryStyle) -> Summary:
        instructions = (
            f"{MEMO}\n\nSummarize the user's text {_STYLE[style]}, in at most "
            f"{max_words} words. Then write a line 'Key points:' followed by up to five key "
            "points, one per line, each starting with '- '."
        )
        messages = [
            {"role": "system", "content": instructions},
            {"role": "user", "content": text},
        ]
        prompt = Prompt(question=text, max_tokens=max(64, max_words * 3), temperature=0.3)
        args = self._chat_args(prompt, messages)
        completion = await self._with_retries(lambda _: self._complete_once(args))
        summary, points = split_key_points(completion.text)
        return Summary(
            summary=truncate_words(summary, max_words),
            key_points=points,
            model=completion.model,
            tokens=completion.total_tokens,
        )


def split_key_points(answer: str) -> tuple[str, list[str]]:
    """``summary`` and the bullet lines after a ``Key points:`` line (if there is one)."""
    parts = _KEY_POINTS.split(answer, maxsplit=1)
    summary = parts[0].strip()
    tail = parts[1] if len(parts) > 1 else ""
    points = [m[1] for line in tail.splitlines() if (m := _BULLET.match(line))]
    return summary, points


def _confidence(choice: Any) -> float | None:
    """The mean token probability, when the server reported log-probabilities."""
    logprobs = getattr(choice, "logprobs", None)
    tokens = getattr(logprobs, "content", None) or []
    values = [t.logprob for t in tokens if getattr(t, "logprob", None) is not None]
    if not values:
        return None
    return round(math.exp(sum(values) / len(values)), 3)
