"""The seed's /api/ai endpoints against a fake OpenAI server: shapes (checked against the
OpenAPI document too), RBAC, the ai rate limit, upstream failures, the record kept."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from memoryd.config import RateLimit
from tests.ai.conftest import Node, StartNode
from tests.fakes.openai import FakeOpenAI, Step
from tests.helpers import Api
from tests.test_openapi import Contract

pytestmark = pytest.mark.storage


@pytest.fixture
async def contract(node: Node) -> Contract:
    resp = await node.api.get("/api/openapi.json")
    assert resp.status == 200
    return Contract(resp.body)


async def _interactions(node: Node, user: Api) -> list[dict[str, Any]]:
    return await node.services.store.ai.interactions(uuid.UUID(user.user["id"]))  # type: ignore[attr-defined]


async def test_chat(node: Node, fake: FakeOpenAI, contract: Contract) -> None:
    user = await node.premium()
    trip = await user.post(
        "/api/memories",
        json={"title": "Lisbon trip", "content": {"text": "The bakery in Belém was great."}},
    )
    resp = await user.post(
        "/api/ai/chat",
        json={"message": "Which bakery did I like?", "context": {"screen": "home"}},
    )
    assert resp.status == 200, resp.body
    contract.check(resp, "POST", "/api/ai/chat")
    body = resp.body
    assert body["response"] == fake.answer
    assert body["confidence"] == 0.9  # the mean token probability the server reported
    assert body["suggestions"] == ["Lisbon trip"]  # the related memory it drew on
    assert body["metadata"]["model"] == "fake-gpt"
    assert body["metadata"]["tokensUsed"] > 0 and body["metadata"]["processingTime"] >= 0
    [chat] = fake.chats()
    assert chat.body.get("stream") is None and chat.body["logprobs"] is True
    assert chat.body["user"] == user.user["id"]  # type: ignore[attr-defined]
    system = chat.body["messages"][0]["content"]
    assert "[Lisbon trip]" in system and "The bakery in Belém was great." in system
    assert '[context from the app] {"screen":"home"}' in system

    thread = trip.body["memory"]["id"]
    await user.post(f"/api/memories/{thread}/messages", json={"content": "Pastéis!"})
    about = await user.post("/api/ai/chat", json={"message": "And?", "memoryId": thread})
    assert about.status == 200
    assert fake.chats()[1].body["messages"][1] == {"role": "user", "content": "Pastéis!"}
    missing = await user.post("/api/ai/chat", json={"message": "?", "memoryId": str(uuid.uuid4())})
    assert missing.status == 404
    contract.check(missing, "POST", "/api/ai/chat")

    [second, first] = await _interactions(node, user)
    assert first["interaction_type"] == "chat" and first["status"] == "completed"
    assert first["input_data"]["message"] == "Which bakery did I like?"
    assert first["output_data"] == {"response": fake.answer}
    assert first["model_used"] == "fake-gpt" and first["tokens_used"] > 0
    assert second["memory_id"] == uuid.UUID(thread)


async def test_categorize(node: Node, fake: FakeOpenAI, contract: Contract) -> None:
    user = await node.premium()
    categories = (await user.get("/api/categories")).body["categories"]
    travel = next(c for c in categories if c["name"] == "Travel")
    await user.post(
        "/api/memories",
        json={"title": "Lisbon bakery trip", "categoryId": travel["id"], "tags": ["flights"]},
    )
    resp = await user.post(
        "/api/ai/categorize", json={"content": "Book the flights for the Lisbon trip"}
    )
    assert resp.status == 200, resp.body
    contract.check(resp, "POST", "/api/ai/categorize")
    body = resp.body
    assert body["suggestedCategory"] == "Travel"
    alternatives = body["alternativeCategories"]
    assert 1 <= len(alternatives) <= 4 and "Travel" not in {a["category"] for a in alternatives}
    scores = [body["confidence"], *(a["confidence"] for a in alternatives)]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert body["metadata"]["model"] == "fake-embedding"
    [embeddings] = [r for r in fake.requests if r.path.endswith("/embeddings")]
    assert embeddings.body["model"] == node.services.settings.openai_embedding_model
    assert embeddings.body["input"][0] == "Book the flights for the Lisbon trip"
    assert len(embeddings.body["input"]) == 1 + len(categories)

    given = await user.post(
        "/api/ai/categorize",
        json={"content": "quarterly budget spreadsheet", "existingCategories": ["Money", "Budget"]},
    )
    assert given.status == 200 and given.body["suggestedCategory"] == "Budget"
    assert [a["category"] for a in given.body["alternativeCategories"]] == ["Money"]


async def test_summarize(node: Node, fake: FakeOpenAI, contract: Contract) -> None:
    user = await node.premium()
    fake.then(Step(text="A short trip to Lisbon.\n\nKey points:\n- Belém\n- Pastéis de nata\n"))
    resp = await user.post(
        "/api/ai/summarize",
        json={"content": "We went to Lisbon. " * 20, "maxLength": 40, "style": "bullet-points"},
    )
    assert resp.status == 200, resp.body
    contract.check(resp, "POST", "/api/ai/summarize")
    assert resp.body["summary"] == "A short trip to Lisbon."
    assert resp.body["keyPoints"] == ["Belém", "Pastéis de nata"]
    assert resp.body["wordCount"] == 5
    system = fake.chats()[0].body["messages"][0]["content"]
    assert "at most 40 words" in system and "bullet points" in system
    bad = await user.post("/api/ai/summarize", json={"content": "x", "style": "poem"})
    assert bad.status == 400
    assert bad.body["error"]["details"] == [
        {"field": "style", "message": "must be brief, detailed or bullet-points"}
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/ai/chat", {"message": "hi"}),
        ("/api/ai/categorize", {"content": "hi"}),
        ("/api/ai/summarize", {"content": "hi"}),
    ],
)
async def test_plain_users_are_forbidden(
    node: Node, fake: FakeOpenAI, contract: Contract, path: str, body: dict[str, Any]
) -> None:
    plain = await node.api.register()
    resp = await plain.post(path, json=body)
    assert resp.status == 403
    assert resp.body["error"]["details"] == {"permission": "access:ai"}
    contract.check(resp, "POST", path)
    anonymous = await node.api.post(path, json=body)
    assert anonymous.status == 401
    admin = await node.premium("admin")
    assert (await admin.post(path, json=body)).status == 200
    assert fake.requests  # only the admin's call reached the AI server
    assert len(fake.requests) == 1


async def test_the_ai_rate_limit(start_node: StartNode, fake: FakeOpenAI) -> None:
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", rate_limit_ai=RateLimit(2, 60)
    )
    contract = Contract((await node.api.get("/api/openapi.json")).body)
    user = await node.premium()
    for _ in range(2):
        ok = await user.post("/api/ai/summarize", json={"content": "One. Two."})
        assert ok.status == 200 and ok.header("RateLimit-Limit") == "2"
    limited = await user.post("/api/ai/chat", json={"message": "hi"})
    assert limited.status == 429
    assert limited.body["error"]["details"]["limit"] == "ai"
    assert int(limited.header("Retry-After") or 0) >= 1
    contract.check(limited, "POST", "/api/ai/chat")
    assert len(fake.chats()) == 2
    other = await node.premium()  # per user
    assert (await other.post("/api/ai/chat", json={"message": "hi"})).status == 200


async def test_upstream_failures(node: Node, fake: FakeOpenAI, contract: Contract) -> None:
    user = await node.premium()
    fake.then(Step(status=401))
    refused = await user.post("/api/ai/chat", json={"message": "hi"})
    assert refused.status == 502 and refused.body["error"]["code"] == "ai_failed"
    contract.check(refused, "POST", "/api/ai/chat")

    fake.then(Step(status=429, retry_after="120"))  # longer than a request may wait
    busy = await user.post("/api/ai/summarize", json={"content": "Some text."})
    assert busy.status == 503, busy.body
    assert busy.body["error"]["code"] == "ai_unavailable"
    assert busy.body["error"]["details"] == {"retryAfter": 120.0}
    contract.check(busy, "POST", "/api/ai/summarize")

    fake.then(*[Step(status=500)] * 3)  # the first try and both retries
    down = await user.post("/api/ai/categorize", json={"content": "x y z"})
    assert down.status == 503 and len(fake.requests) == 5

    rows = await _interactions(node, user)
    assert [(r["interaction_type"], r["status"]) for r in rows] == [
        ("categorize", "failed"), ("summarize", "failed"), ("chat", "failed")
    ]  # fmt: skip
    assert rows[0]["error_message"] == "the AI server answered HTTP 500"
    metrics = (await node.api.get("/metrics")).body
    model = node.services.settings.openai_chat_model
    assert f'ai_requests_total{{model="{model}",status="error"}} 3.0' in metrics
