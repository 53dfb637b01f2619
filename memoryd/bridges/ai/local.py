"""The local responder: Memo without a model, working offline from the user's own words.

It never pretends to be a model. Every answer says it comes from the local responder,
its model is ``memoryd-local`` and it uses no tokens. It answers by quoting the sentences
of the retrieved passages (the user's memories and the thread) that best match the
question. It summarises by extracting the most central sentences, and its embeddings are
hashed bags of words, so categories are suggested by shared vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memoryd.bridges.ai.base import (
    LOCAL_MODEL,
    Completion,
    DeltaSink,
    Embeddings,
    Prompt,
    Summary,
    SummaryStyle,
)
from memoryd.bridges.ai.text import (
    extractive_summary,
    hashed_vector,
    overlap,
    rank_sentences,
    sentences,
    terms,
    truncate_words,
)

INTRO = (
    "I'm Memo's local responder: no AI model is configured on this server, so I can't "
    "reason about your question, only find what you wrote that matches it."
)
_QUOTES = 3
_CHUNK = re.compile(r"\S+\s*")
_SENTENCES_BY_STYLE = {"brief": 2, "detailed": 6, "bullet-points": 5}


class LocalProvider:
    """`AIProvider` with no model: retrieval and extraction only."""

    @property
    def model(self) -> str:
        return LOCAL_MODEL

    @property
    def is_local(self) -> bool:
        return True

    async def complete(self, prompt: Prompt, on_delta: DeltaSink | None = None) -> Completion:
        text, confidence = self.answer(prompt)
        if on_delta is not None:
            pieces = _CHUNK.findall(text)
            for start in range(0, len(pieces), 4):
                await on_delta("".join(pieces[start : start + 4]))
        return Completion(text=text, model=LOCAL_MODEL, finish_reason="stop", confidence=confidence)

    def answer(self, prompt: Prompt) -> tuple[str, float]:
        """The answer and its confidence: the share of the question's terms the best
        quote contains (0 when nothing matched)."""
        sources: list[str] = []
        texts: list[str] = []
        for passage in prompt.passages:
            sources.append(passage.source)
            texts.append(passage.text)
        for turn in prompt.history:
            if turn.role == "user":  # quote the user, never Memo's own earlier answers
                sources.append("this thread")
                texts.append(turn.content)
        if prompt.extra_context:
            sources.append("the context you sent")
            texts.append(prompt.extra_context)
        quotes: list[tuple[str, str]] = []
        for _, index, sentence in rank_sentences(prompt.question, texts):
            if all(sentence != q for q, _ in quotes) and sentence != prompt.question.strip():
                quotes.append((sentence, sources[index]))
            if len(quotes) == _QUOTES:
                break
        if not quotes:
            asked = truncate_words(prompt.question.strip(), 30)
            return f"{INTRO} Nothing in your memories matches “{asked}”.", 0.0
        lines = "\n".join(f"- “{truncate_words(q, 60)}” ({source})" for q, source in quotes)
        confidence = overlap(terms(prompt.question), quotes[0][0])
        return f"{INTRO}\n\nFrom your memories:\n{lines}", round(confidence, 3)

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(vectors=[hashed_vector(t) for t in texts], model=LOCAL_MODEL)

    async def summarize(self, text: str, max_words: int, style: SummaryStyle) -> Summary:
        picked = extractive_summary(text, max_words, _SENTENCES_BY_STYLE[style])
        if not picked:
            picked = [truncate_words(text.strip(), max_words)]
        count = max(1, min(5, len(sentences(text)) // 2))  # key points leave some out
        points = [truncate_words(s, 25) for s in extractive_summary(text, 10_000, count)]
        if style == "bullet-points":
            summary = "\n".join(f"- {s}" for s in picked)
        else:
            summary = " ".join(picked)
        return Summary(summary=summary, key_points=points or picked, model=LOCAL_MODEL)

    async def aclose(self) -> None:
        return None
