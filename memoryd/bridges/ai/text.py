"""Plain text tools for the local responder: terms, sentences, ranking, vectors.

No model and no I/O: deterministic functions over the user's own words. The term
normaliser is a light suffix stripper (``bakeries`` and ``bakery`` meet at ``bakery``),
good enough to match a question against notes, not a linguistic stemmer.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")

STOPWORDS = frozenset(
    [
        "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are",
        "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
        "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
        "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself",
        "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself",
        "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on",
        "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same",
        "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
        "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too",
        "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which",
        "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
        "yourselves", "memo", "please", "tell", "know", "remember", "said", "say",
    ]
)  # fmt: skip


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(word: str) -> str:
    """A light stem: plural and common verb endings off, so forms of a word meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The content words of ``text``, normalised, in order (duplicates kept)."""
    return [normalize(w) for w in words(text) if w not in STOPWORDS and len(w) > 1]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def word_count(text: str) -> int:
    return len(words(text))


def estimate_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's tokenizers average for English."""
    return max(1, math.ceil(len(text) / 4))


def truncate_words(text: str, max_words: int) -> str:
    found = list(_WORD.finditer(text))
    if len(found) <= max_words:
        return text
    return text[: found[max_words - 1].end()].rstrip() + "…"


def overlap(query_terms: Iterable[str], text: str) -> float:
    """The share of the distinct query terms that occur in ``text`` (0..1)."""
    wanted = set(query_terms)
    if not wanted:
        return 0.0
    return len(wanted & set(terms(text))) / len(wanted)


def rank_sentences(question: str, texts: Sequence[str]) -> list[tuple[float, int, str]]:
    """Sentences of ``texts`` that share terms with ``question``, best first.

    Each is ``(score, index of its text, sentence)``. A sentence scores the IDF-weighted
    sum of the question terms it contains (rare terms count more), scaled by how many of
    the question's terms it covers.
    """
    wanted = set(terms(question))
    if not wanted:
        return []
    candidates = [(i, s) for i, text in enumerate(texts) for s in sentences(text)]
    bags = [set(terms(s)) for _, s in candidates]
    n = len(candidates)
    idf = {t: math.log(1 + n / (1 + sum(t in bag for bag in bags))) for t in wanted}
    ranked = []
    for (i, sentence), bag in zip(candidates, bags, strict=True):
        hits = wanted & bag
        if hits:
            coverage = len(hits) / len(wanted)
            ranked.append((sum(idf[t] for t in hits) * coverage, i, sentence))
    ranked.sort(key=lambda r: -r[0])
    return ranked


def extractive_summary(text: str, max_words: int, max_sentences: int) -> list[str]:
    """The most central sentences of ``text``, in their original order.

    A sentence's weight is the mean frequency (in the whole text) of its content words;
    sentences are taken best first while they fit in ``max_words``.
    """
    parts = sentences(text)
    freq = Counter(terms(text))
    scored = []
    for i, sentence in enumerate(parts):
        bag = terms(sentence)
        if bag:
            scored.append((sum(freq[t] for t in bag) / len(bag) ** 0.5, i))
    scored.sort(key=lambda s: -s[0])
    chosen: list[int] = []
    used = 0
    for _, i in scored:
        size = word_count(parts[i])
        if len(chosen) >= max_sentences or (chosen and used + size > max_words):
            continue
        chosen.append(i)
        used += size
    return [truncate_words(parts[i], max_words) for i in sorted(chosen)]


def hashed_vector(text: str, dims: int = 512) -> list[float]:
    """A unit bag-of-words vector with hashed dimensions (feature hashing).

    Texts that share words point the same way, so cosine similarity ranks them; words
    that collide in a bucket add a little noise, which 512 buckets keep small.
    """
    vector = [0.0] * dims
    for term, count in Counter(terms(text)).items():
        digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "big") % dims
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[bucket] += sign * (1 + math.log(count))
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
