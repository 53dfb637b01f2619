"""The OpenAI-compatible provider on its own, against the fake server: streaming with
usage, retries (Retry-After, 5xx), timeouts, cut-off streams; and the text helpers."""

from __future__ import annotations

import email.utils
import time

import pytest

from memoryd.bridges.ai import AIError, Prompt
from memoryd.bridges.ai.openai_compat import (
    OpenAICompatProvider,
    parse_retry_after,
    split_key_points,
)
from memoryd.bridges.ai.text import rank_sentences, terms
from tests.fakes.openai import FakeOpenAI, Step

PROMPT = Prompt(question="Where was the bakery?")


def _provider(fake: FakeOpenAI, **options: float) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        api_key="test",
        base_url=fake.url + "/v1",
        chat_model="chat-model",
        embedding_model="embedding-model",
        **options,  # type: ignore[arg-type]
    )


async def _stream(provider: OpenAICompatProvider) -> tuple[str, list[str]]:
    deltas: list[str] = []

    async def collect(text: str) -> None:
        deltas.append(text)

    try:
        completion = await provider.complete(PROMPT, collect)
    finally:
        await provider.aclose()
    return completion.text, deltas


async def test_a_stream_reports_its_usage(fake: FakeOpenAI) -> None:
    provider = _provider(fake)
    deltas: list[str] = []

    async def collect(text: str) -> None:
        deltas.append(text)

    completion = await provider.complete(PROMPT, collect)
    await provider.aclose()
    assert "".join(deltas) == completion.text == fake.answer
    assert len(deltas) == -(-len(fake.answer) // 8)
    assert completion.model == "fake-gpt" and completion.finish_reason == "stop"
    assert completion.completion_tokens == len(deltas)  # the fake's usage, not an estimate
    assert completion.prompt_tokens > 0


async def test_429_waits_for_retry_after_and_5xx_backs_off(fake: FakeOpenAI) -> None:
    fake.then(Step(status=429, retry_after="0.25"), Step(status=502))
    text, _ = await _stream(_provider(fake))
    assert text == fake.answer
    first, second, third = fake.chats()
    assert second.at - first.at >= 0.25
    assert third.at - second.at >= 0.25  # the first backoff is 0.5 s less up to 25 %


async def test_retries_are_bounded(fake: FakeOpenAI) -> None:
    fake.then(*[Step(status=500)] * 3)
    with pytest.raises(AIError) as failed:
        await _stream(_provider(fake, max_retries=1))
    assert failed.value.retryable and failed.value.status == 500
    assert len(fake.chats()) == 2


async def test_a_long_retry_after_is_left_to_the_caller(fake: FakeOpenAI) -> None:
    fake.then(Step(status=429, retry_after="90"))
    started = time.monotonic()
    with pytest.raises(AIError) as busy:
        await _stream(_provider(fake))
    assert time.monotonic() - started < 1
    assert busy.value.retryable and busy.value.retry_after == 90


async def test_a_client_error_is_not_retried(fake: FakeOpenAI) -> None:
    fake.then(Step(status=400))
    with pytest.raises(AIError) as refused:
        await _stream(_provider(fake))
    assert not refused.value.retryable and len(fake.chats()) == 1


async def test_a_silent_server_times_out(fake: FakeOpenAI) -> None:
    fake.then(Step(chunk_delay=1.0))
    started = time.monotonic()
    with pytest.raises(AIError) as slow:
        await _stream(_provider(fake, timeout=0.2, max_retries=0))
    assert slow.value.retryable and "in time" in str(slow.value)
    assert time.monotonic() - started < 1


async def test_a_stream_cut_before_any_text_is_retried(fake: FakeOpenAI) -> None:
    fake.then(Step(cut_after=0))
    text, deltas = await _stream(_provider(fake))
    assert text == fake.answer == "".join(deltas)
    assert len(fake.chats()) == 2


async def test_a_stream_cut_after_text_is_not_retried_here(fake: FakeOpenAI) -> None:
    fake.then(Step(cut_after=2))
    with pytest.raises(AIError) as cut:
        await _stream(_provider(fake))
    assert cut.value.retryable and cut.value.partial == fake.answer[:16]
    assert len(fake.chats()) == 1


async def test_embeddings_and_summaries(fake: FakeOpenAI) -> None:
    provider = _provider(fake)
    embeddings = await provider.embed(["lisbon trip", "work report", "lisbon"])
    assert len(embeddings.vectors) == 3 and embeddings.model == "fake-embedding"
    assert embeddings.tokens == 5
    fake.then(Step(text="Short.\nKey points:\n- one\n* two\n3. three\nnot a point"))
    summary = await provider.summarize("Some long text.", 10, "brief")
    await provider.aclose()
    assert summary.summary == "Short." and summary.key_points == ["one", "two", "three"]
    assert summary.tokens > 0


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (parse_retry_after({"retry-after": date}) or 0) <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_key_points_are_optional() -> None:
    assert split_key_points("Just a summary.") == ("Just a summary.", [])
    assert split_key_points("S.\n**Key points:**\n- a") == ("S.", ["a"])


def test_ranking_prefers_sentences_with_the_rare_question_words() -> None:
    texts = ["The bakery was closed. We met Ana at the bakery in Belém.", "Belém is far."]
    ranked = rank_sentences("Where did we meet Ana?", texts)
    assert ranked[0][2] == "We met Ana at the bakery in Belém."
    assert terms("Bakeries, bakery and walking") == ["bakery", "bakery", "walk"]
