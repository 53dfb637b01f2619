"""Full text and trigram relevance on the shipped corpus: exact words, stems, typos,
prefixes, phrases, and weights (title and tags above a passing mention)."""

from __future__ import annotations

import pytest

from tests.search.conftest import Loaded, plain, search
from tests.search.corpus import TEXT_CASES, Case

pytestmark = pytest.mark.storage


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda c: f"{c.kind}:{c.query}")
async def test_expected_memory_first(corpus: Loaded, case: Case) -> None:
    body = await search(corpus.user, case.query, mode="text", limit=5)
    assert body["mode"] == "text" and body["modes"] == ["text"]
    ranked = [corpus.keys.get(r["memory"]["id"]) for r in body["results"]]
    assert ranked and ranked[0] in case.top.split("|"), ranked
    for other in case.also:
        assert other in ranked[:3], ranked
    if case.message is not None:
        first = body["results"][0]["messages"]
        assert first, body["results"][0]
        assert case.message.lower() in plain(first[0]["snippet"]).lower(), first
