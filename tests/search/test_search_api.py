"""GET /api/search and the socket's ``search``: validation, paging, filters, isolation,
edits and deletes showing at once, and ``GET /api/memories?search=`` finding messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from memoryd.client import Client, RequestError
from tests.conftest import RunningServer
from tests.helpers import Api
from tests.search.conftest import Loaded, plain, search

pytestmark = pytest.mark.storage


def _ws(server: RunningServer) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"


async def _memory(user: Api, *messages: str, **fields: Any) -> dict[str, Any]:
    resp = await user.post("/api/memories", json={"title": "untitled", **fields})
    assert resp.status == 201, resp.body
    memory = resp.body["memory"]
    memory["messages"] = []
    for text in messages:
        sent = await user.post(f"/api/memories/{memory['id']}/messages", json={"content": text})
        assert sent.status == 201, sent.body
        memory["messages"].append(sent.body["message"])
    return memory


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "a", "mode": "fuzzy"}, "mode"),
        ({"q": "a", "limit": "0"}, "limit"),
        ({"q": "a", "limit": "51"}, "limit"),
        ({"q": "a", "limit": "ten"}, "limit"),
        ({"q": "a", "categoryId": "nope"}, "categoryId"),
        ({"q": "a", "from": "yesterday"}, "from"),
        ({"q": "a", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ({"q": "a", "cursor": "garbage"}, "cursor"),
        ({"q": "a", "sort": "title"}, "sort"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(
    api: Api, params: dict[str, str], field: str
) -> None:
    user = await api.register()
    resp = await user.get("/api/search", params=params)
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert field in [d["field"] for d in resp.body["error"]["details"]], resp.body


async def test_needs_a_token(api: Api) -> None:
    resp = await api.get("/api/search", params={"q": "castle"})
    assert resp.status == 401 and resp.error_code == "unauthorized"


async def test_result_shape_message_id_seq_and_marked_snippet(corpus: Loaded) -> None:
    body = await search(corpus.user, "custard tarts", mode="text")
    first = body["results"][0]
    assert first["memory"]["id"] == corpus.memory_ids["lisbon"]
    [match] = first["messages"]
    resp = await corpus.user.get(f"/api/memories/{first['memory']['id']}/messages/{match['id']}")
    assert resp.status == 200
    assert match["seq"] == resp.body["message"]["seq"]
    assert "<mark>custard</mark> <mark>tarts</mark>" in match["snippet"]
    assert plain(match["snippet"]) in resp.body["message"]["content"]
    assert body["modes"] == ["text"] and body.get("nextCursor") is None


async def test_snippets_are_escaped_html(api: Api) -> None:
    user = await api.register()
    await _memory(user, "<script>alert(1)</script> the castle & the <b>moat</b>")
    body = await search(user, "castle", mode="text")
    snippet = body["results"][0]["messages"][0]["snippet"]
    # ts_headline drops what its parser takes for tags; the rest is escaped text.
    assert "<script>" not in snippet and "<b>" not in snippet
    assert "<mark>castle</mark> &amp; the" in snippet


async def test_cursor_pages_through_every_result_once(corpus: Loaded) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"mode": "text", "limit": "2", **({"cursor": cursor} if cursor else {})}
        body = await search(corpus.user, "p", **params)
        seen += [r["memory"]["id"] for r in body["results"]]
        cursor = body.get("nextCursor")
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) > 4
    everything = await search(corpus.user, "p", mode="text", limit="50")
    assert seen == [r["memory"]["id"] for r in everything["results"]]
    # A cursor belongs to its query.
    other = await corpus.user.get("/api/search", params={"q": "tram", "cursor": body_cursor(seen)})
    assert other.status == 400


def body_cursor(_: list[str]) -> str:
    import base64

    return base64.urlsafe_b64encode(b'{"o":2,"h":1}').decode().rstrip("=")


async def test_filters_category_tags_and_dates(api: Api) -> None:
    user = await api.register()
    cats = (await user.get("/api/categories")).body["categories"]
    travel = next(c for c in cats if c["name"] == "Travel")
    a = await _memory(user, "the harbour at dawn", categoryId=travel["id"], tags=["sea"])
    b = await _memory(user, "the harbour at night", tags=["sea", "night"])
    ids = lambda body: [r["memory"]["id"] for r in body["results"]]  # noqa: E731
    assert set(ids(await search(user, "harbour", mode="text"))) == {a["id"], b["id"]}
    assert ids(await search(user, "harbour", mode="text", categoryId=travel["id"])) == [a["id"]]
    assert ids(await search(user, "harbour", mode="text", tags="night")) == [b["id"]]
    assert ids(await search(user, "harbour", mode="text", tags="sea,night")) == [b["id"]]
    later = b["messages"][0]["createdAt"]
    assert ids(await search(user, "harbour", mode="text", **{"from": later})) == [b["id"]]
    before = a["messages"][0]["createdAt"]
    assert ids(await search(user, "harbour", mode="text", to=before)) == [a["id"]]
    assert ids(await search(user, "harbour", mode="text", categoryId=str(uuid.uuid4()))) == []


async def test_another_users_words_never_match(api: Api) -> None:
    secret = f"zanzibar{uuid.uuid4().hex[:6]}"
    owner = await api.register()
    other = await api.register()
    await _memory(owner, f"the {secret} plan", title=f"{secret} title")
    assert (await search(owner, secret, mode="text"))["results"]
    for q in (secret, secret[:-1] + "x", secret[:7], f'"the {secret} plan"'):
        assert (await search(other, q, mode="text"))["results"] == [], q
        listed = await other.get("/api/memories", params={"search": q})
        assert listed.body["memories"] == [], q


async def test_edits_and_deletes_show_within_a_second(premium: Api) -> None:
    user = premium
    memory = await _memory(user, "we fed the pelicans")
    message = memory["messages"][0]
    path = f"/api/memories/{memory['id']}/messages/{message['id']}"
    assert (await search(user, "pelicans", mode="text"))["results"]
    started = time.monotonic()
    assert (await user.patch(path, json={"content": "we fed the flamingos"})).status == 200
    assert (await search(user, "pelicans", mode="text"))["results"] == []
    assert (await search(user, "flamingos", mode="text"))["results"]
    assert (await user.delete(path)).status == 204
    assert (await search(user, "flamingos", mode="text"))["results"] == []
    await user.patch(f"/api/memories/{memory['id']}", json={"title": "Lagoon birds"})
    assert (await search(user, "lagoon", mode="text"))["results"][0]["snippet"]
    assert (await user.delete(f"/api/memories/{memory['id']}")).status == 204
    assert (await search(user, "lagoon", mode="text"))["results"] == []
    assert time.monotonic() - started < 1.0 * 5  # five round trips each well under a second


async def test_memories_search_finds_what_was_said_in_messages(corpus: Loaded) -> None:
    resp = await corpus.user.get("/api/memories", params={"search": "castle"})
    assert resp.status == 200
    titles = {m["title"] for m in resp.body["memories"]}
    assert {"Lisbon weekend", "Leo's birthday party"} <= titles
    assert resp.body["pagination"]["total"] == len(resp.body["memories"])
    typo = await corpus.user.get("/api/memories", params={"search": "castel"})
    assert "Lisbon weekend" in {m["title"] for m in typo.body["memories"]}


async def test_socket_search_answers_like_rest(server: RunningServer, corpus: Loaded) -> None:
    client = Client(_ws(server), corpus.user.token or "")
    await client.start()
    try:
        data = await client.request("search", q="fado singer", mode="text", limit=3)
        rest = await search(corpus.user, "fado singer", mode="text", limit=3)
        assert data["modes"] == ["text"]
        assert [r["memory"]["id"] for r in data["results"]] == [
            r["memory"]["id"] for r in rest["results"]
        ]
        assert (
            data["results"][0]["messages"][0]["snippet"]
            == rest["results"][0]["messages"][0]["snippet"]
        )
        with pytest.raises(RequestError) as bad:
            await client.request("search", q="", limit=3)
        assert bad.value.code == "validation_failed"
        with pytest.raises(RequestError):
            await client.request("search", q="x", extra=1)
    finally:
        await client.close()
    await asyncio.sleep(0)
