"""Pure parts of search: reciprocal rank fusion, grouping hits into memories, snippets.

Reciprocal rank fusion (Cormack et al., 2009) scores a document ``sum(w / (k + rank))``
over the ranked lists it appears in; k = 60 as in the paper and pgvector's examples. It
needs no score calibration between full text ranks, trigram similarities and cosines.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from memoryd.storage.search import START, STOP, WORD_SIMILARITY, Hit

RRF_K = 60
_WORD = re.compile(r"\w+", re.UNICODE)
_SNIPPET_WORDS = 30


def fuse(lists: Sequence[tuple[Sequence[Hit], float]], k: int = RRF_K) -> list[Hit]:
    """One ranking from several ``(hits, weight)`` lists, best first."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, weight in lists:
        for rank, hit in enumerate(hits, start=1):
            key = hit.doc_id
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
            first.setdefault(key, hit)
    order = sorted(scores, key=lambda d: (-scores[d], d))  # ties by id: pages hold still
    return [Hit(first[d].memory_id, first[d].message_id, scores[d]) for d in order]


@dataclass
class Group:
    memory_id: UUID
    score: float
    own: Hit | None = None  # the memory's own text matched
    messages: list[Hit] = field(default_factory=list)


def group(hits: Iterable[Hit], per_memory: int) -> list[Group]:
    """Hits grouped by memory in order of their best hit; a memory's score is its best
    hit's plus a hundredth of the others' (of two memories with equally good best hits,
    the one with more matches first; many weak matches do not beat a strong one)."""
    groups: dict[UUID, Group] = {}
    for hit in hits:
        g = groups.get(hit.memory_id)
        if g is None:
            g = groups[hit.memory_id] = Group(hit.memory_id, hit.score)
        else:
            g.score += hit.score / 100
        if hit.message_id is None:
            g.own = hit
        elif len(g.messages) < per_memory:
            g.messages.append(hit)
    return sorted(groups.values(), key=lambda g: (-g.score, str(g.memory_id)))


def trigrams(word: str) -> set[str]:
    """pg_trgm's trigrams of one word (padded with two spaces before, one after)."""
    padded = f"  {word.lower()} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class SimilarWords:
    """Whether a word of a text is one of the query's words with a typo or a prefix of
    it: pg_trgm's similarity, the query's trigrams made once, each text word judged
    once (a page of snippets repeats the same words)."""

    __slots__ = ("_judged", "_wanted")

    def __init__(self, words: Sequence[str]) -> None:
        self._wanted = [(w, trigrams(w)) for w in words]
        self._judged: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._wanted)

    def __call__(self, word: str) -> bool:
        lower = word.lower()
        found = self._judged.get(lower)
        if found is None:
            grams = trigrams(lower)
            found = any(
                lower.startswith(w) or len(grams & g) / len(grams | g) >= WORD_SIMILARITY
                for w, g in self._wanted
            )
            self._judged[lower] = found
        return found


def marked(headline: str) -> str:
    """ts_headline output (START/STOP marks) as escaped HTML with ``<mark>``."""
    return html.escape(headline).replace(START, "<mark>").replace(STOP, "</mark>")


def fuzzy_snippet(text: str, words: Sequence[str] | SimilarWords) -> str:
    """A window of ``text`` around the first word similar to one of ``words`` (a typo or
    a prefix), those words marked; the start of the text when none is."""
    similar = words if isinstance(words, SimilarWords) else SimilarWords(words)
    tokens = list(_WORD.finditer(text))
    hits = [i for i, m in enumerate(tokens) if similar and similar(m.group())]
    if not tokens:
        return html.escape(text[:200])
    start_token = max(0, (hits[0] if hits else 0) - _SNIPPET_WORDS // 3)
    end_token = min(len(tokens), start_token + _SNIPPET_WORDS)
    begin = tokens[start_token].start() if start_token else 0
    end = tokens[end_token - 1].end() if end_token < len(tokens) else len(text)
    out, pos = [], begin
    marks = {i for i in hits if start_token <= i < end_token}
    for i in range(start_token, end_token):
        m = tokens[i]
        if i in marks:
            out.append(html.escape(text[pos : m.start()]))
            out.append(f"<mark>{html.escape(m.group())}</mark>")
            pos = m.end()
    out.append(html.escape(text[pos:end]))
    prefix = "… " if begin > 0 else ""
    suffix = " …" if end < len(text) else ""
    return prefix + "".join(out).strip() + suffix
