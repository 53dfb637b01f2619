"""Memo with no AI server configured: the local responder answers from the user's own
memories, end to end, and says what it is."""

from __future__ import annotations

import uuid

import pytest

from memoryd.bridges.ai import LocalProvider, Passage, Prompt, Turn
from memoryd.client import connect
from tests.ai.conftest import Node, StartNode
from tests.helpers import Api

pytestmark = pytest.mark.storage

BAKERY = "We found the best pastéis de nata at a little bakery in Belém, near the monastery."


@pytest.fixture
async def local(start_node: StartNode) -> Node:
    return await start_node()  # no OPENAI_API_KEY, no OPENAI_BASE_URL


async def _remember(user: Api) -> dict[str, str]:
    listed = (await user.get("/api/categories")).body["categories"]
    categories = {c["name"]: c["id"] for c in listed}
    trip = await user.post(
        "/api/memories",
        json={
            "title": "Lisbon trip",
            "categoryId": categories["Travel"],
            "tags": ["portugal"],
            "content": {"text": f"Tram 28 was packed. {BAKERY} The castle view was windy."},
        },
    )
    work = await user.post(
        "/api/memories",
        json={"title": "Quarterly report", "categoryId": categories["Work"],
              "content": {"text": "The quarterly report is due on Friday."}},
    )  # fmt: skip
    chat = await user.post("/api/memories", json={"title": "Questions"})
    note = f"/api/memories/{work.body['memory']['id']}/messages"
    await user.post(note, json={"content": "Ask Rita for the sales figures before Friday."})
    return {
        "trip": trip.body["memory"]["id"],
        "work": work.body["memory"]["id"],
        "chat": chat.body["memory"]["id"],
    }


async def test_a_thread_reply_quotes_the_users_own_memories(local: Node) -> None:
    user = await local.premium()
    ids = await _remember(user)
    async with connect(local.ws, user.token or "") as client:
        resp = await user.post(
            f"/api/memories/{ids['chat']}/messages",
            json={"content": "Where was that bakery with the pastéis de nata?", "ai": True},
        )
        assert resp.status == 201, resp.body
        reply = resp.body["aiResponse"]
        signals = []
        while len(signals) < 2:
            signal = await client.next_signal(5)
            if signal.signal == "ai.delta":
                signals.append(signal.data)
    assert signals[0]["index"] == 0 and signals[0]["replyTo"] == resp.body["message"]["id"]
    assert reply["isAiGenerated"] is True and reply["status"] == "sent"
    assert reply["metadata"]["model"] == "memoryd-local"
    assert reply["metadata"]["tokensUsed"] == 0
    content = reply["content"]
    assert content.startswith("I'm Memo's local responder: no AI model is configured")
    assert f"“{BAKERY}” (Lisbon trip)" in content
    assert "quarterly" not in content.lower()  # nothing unrelated is quoted


async def test_the_local_ai_endpoints(local: Node) -> None:
    user = await local.premium()
    ids = await _remember(user)
    chat = await user.post("/api/ai/chat", json={"message": "When is the report due?"})
    assert chat.status == 200, chat.body
    assert "The quarterly report is due on Friday." in chat.body["response"]
    assert "local responder" in chat.body["response"]
    assert chat.body["metadata"] == {
        "tokensUsed": 0,
        "processingTime": chat.body["metadata"]["processingTime"],
        "model": "memoryd-local",
    }
    assert chat.body["suggestions"] == ["Quarterly report"]
    assert 0 < chat.body["confidence"] <= 1

    nothing = await user.post("/api/ai/chat", json={"message": "What is my cat's name?"})
    assert "Nothing in your memories matches" in nothing.body["response"]
    assert nothing.body["confidence"] == 0

    thread = await user.post(
        "/api/ai/chat", json={"message": "Who has the sales figures?", "memoryId": ids["work"]}
    )
    assert "Ask Rita for the sales figures before Friday." in thread.body["response"]

    category = await user.post(
        "/api/ai/categorize", json={"content": "Plan another trip to Portugal: Lisbon again"}
    )
    assert category.status == 200, category.body
    assert category.body["suggestedCategory"] == "Travel"
    assert category.body["metadata"]["model"] == "memoryd-local"

    text = (
        "Lisbon is the capital of Portugal. The trip to Lisbon took four days. "
        "We walked up to the castle of Lisbon every evening. The weather was mild. "
        "On the last day we bought tiles."
    )
    summary = await user.post(
        "/api/ai/summarize", json={"content": text, "maxLength": 20, "style": "brief"}
    )
    assert summary.status == 200, summary.body
    body = summary.body
    assert 0 < body["wordCount"] <= 20
    assert all(s.strip() in text for s in body["summary"].split("  "))
    assert "Lisbon" in body["summary"]
    assert body["keyPoints"] and all(p in text for p in body["keyPoints"])
    assert body["metadata"]["model"] == "memoryd-local"

    rows = await local.services.store.ai.interactions(uuid.UUID(user.user["id"]))  # type: ignore[attr-defined]
    assert {r["model_used"] for r in rows} == {"memoryd-local"}
    assert [r["interaction_type"] for r in rows] == [
        "summarize", "categorize", "chat", "chat", "chat"
    ]  # fmt: skip


async def test_the_local_responder_quotes_the_user_never_itself() -> None:
    prompt = Prompt(
        question="What did the plumber say about the boiler?",
        history=(
            Turn("user", "The plumber said the boiler needs a new valve."),
            Turn("assistant", "The boiler is fine, said the plumber."),  # Memo's own words
        ),
        passages=(Passage(source="House", text="Boiler serviced in May. Paint the fence."),),
    )
    deltas: list[str] = []

    async def collect(text: str) -> None:
        deltas.append(text)

    completion = await LocalProvider().complete(prompt, collect)
    assert "".join(deltas) == completion.text
    assert completion.model == "memoryd-local" and completion.total_tokens == 0
    lines = completion.text.splitlines()
    assert lines[-2:] == [
        "- “The plumber said the boiler needs a new valve.” (this thread)",
        "- “Boiler serviced in May.” (House)",
    ]
    assert "is fine" not in completion.text and "fence" not in completion.text
