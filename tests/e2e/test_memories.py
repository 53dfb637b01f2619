"""/api/memories: create with the seed's validation, read, update, delete, list and filter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from tests.conftest import RunningServer
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="module")
async def someone(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    """One user for the tests whose assertions do not depend on what else that user has."""
    return await Api(http, server.url).register()


async def _create(client: Api, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/memories", json=fields)
    assert resp.status == 201, resp.body
    return resp.body["memory"]  # type: ignore[no-any-return]


def _fields_in_error(body: Any) -> set[str | None]:
    return {d["field"] for d in body["error"]["details"]}


async def _titles(client: Api, **params: Any) -> list[str]:
    resp = await client.get("/api/memories", params=params)
    assert resp.status == 200, resp.body
    return [m["title"] for m in resp.body["memories"]]


# -- create -----------------------------------------------------------------------------


async def test_create_returns_201_with_every_field(someone: Api) -> None:
    work = (await someone.get("/api/categories")).body["categories"][0]
    resp = await someone.post(
        "/api/memories",
        json={
            "title": "Trip",
            "description": "Summer in Lisbon",
            "categoryId": work["id"],
            "content": {"text": "pastéis", "items": [1, 2, {"x": None}]},
            "tags": ["travel", "food"],
            "metadata": {"source": "test"},
        },
    )
    assert resp.status == 201, resp.body
    assert set(resp.body) == {"memory"}
    memory = resp.body["memory"]
    assert memory["userId"] == someone.user["id"]  # type: ignore[attr-defined]
    assert memory["title"] == "Trip"
    assert memory["description"] == "Summer in Lisbon"
    assert memory["categoryId"] == work["id"]
    assert memory["content"] == {"text": "pastéis", "items": [1, 2, {"x": None}]}
    assert memory["tags"] == ["travel", "food"]
    assert memory["metadata"] == {"source": "test"}
    assert memory["isFavorite"] is False
    assert memory["isArchived"] is False
    assert memory["privacyLevel"] == "private"
    assert memory["messageCount"] == 0
    assert memory["lastMessageSeq"] == 0
    assert memory["createdAt"] == memory["updatedAt"]

    got = await someone.get(f"/api/memories/{memory['id']}")
    assert got.status == 200
    assert got.body == {"memory": memory}


async def test_an_empty_body_creates_an_empty_memory(someone: Api) -> None:
    memory = await _create(someone)
    assert memory["title"] is None
    assert memory["categoryId"] is None
    assert memory["tags"] == []
    assert memory["content"] is None


async def test_limits_of_the_seed_are_inclusive(someone: Api) -> None:
    memory = await _create(
        someone, title="t" * 255, description="d" * 1000, tags=[f"{i}" * 50 for i in range(10)]
    )
    assert len(memory["title"]) == 255
    assert len(memory["tags"]) == 10


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t" * 256}, "title"),
        ({"description": "d" * 1001}, "description"),
        ({"tags": [str(i) for i in range(11)]}, "tags"),
        ({"tags": ["x" * 51]}, "tags[0]"),
        ({"tags": ["ok", ""]}, "tags[1]"),
        ({"tags": "a,b"}, "tags"),
        ({"tags": [1]}, "tags[0]"),
        ({"categoryId": "not-a-uuid"}, "categoryId"),
        ({"categoryId": str(uuid.uuid4())}, "categoryId"),
        ({"title": 12}, "title"),
        ({"isFavorite": "yes"}, "isFavorite"),
        ({"privacyLevel": "everyone"}, "privacyLevel"),
        ({"userId": str(uuid.uuid4())}, "userId"),
        ({"id": str(uuid.uuid4())}, "id"),
    ],
)
async def test_create_validation(someone: Api, body: dict[str, Any], field: str) -> None:
    before = (await someone.get("/api/memories")).body["pagination"]["total"]
    resp = await someone.post("/api/memories", json={"title": "valid", **body})
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert field in _fields_in_error(resp.body), resp.body
    assert (await someone.get("/api/memories")).body["pagination"]["total"] == before


async def test_every_invalid_field_is_reported_at_once(someone: Api) -> None:
    resp = await someone.post(
        "/api/memories", json={"title": "t" * 256, "description": "d" * 1001, "extra": 1}
    )
    assert resp.status == 400
    assert _fields_in_error(resp.body) == {"title", "description", "extra"}
    for detail in resp.body["error"]["details"]:
        assert detail["message"]


async def test_category_of_another_user_is_refused(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    bobs = (await bob.get("/api/categories")).body["categories"][0]
    resp = await alice.post("/api/memories", json={"title": "x", "categoryId": bobs["id"]})
    assert resp.status == 400
    assert resp.error_code == "validation_failed"
    assert _fields_in_error(resp.body) == {"categoryId"}
    assert (await alice.get("/api/memories")).body["memories"] == []

    mine = await _create(alice, title="mine")
    patch = await alice.patch(f"/api/memories/{mine['id']}", json={"categoryId": bobs["id"]})
    assert patch.status == 400
    assert _fields_in_error(patch.body) == {"categoryId"}
    assert (await alice.get(f"/api/memories/{mine['id']}")).body["memory"]["categoryId"] is None


# -- get, update, delete ----------------------------------------------------------------


@pytest.mark.parametrize("memory_id", [str(uuid.uuid4()), "nope", "1"])
async def test_unknown_or_malformed_id_is_404(someone: Api, memory_id: str) -> None:
    for resp in (
        await someone.get(f"/api/memories/{memory_id}"),
        await someone.patch(f"/api/memories/{memory_id}", json={"title": "x"}),
    ):
        assert resp.status == 404, resp.body
        assert resp.error_code == "not_found"


async def test_patch_favorite_archive_and_fields(someone: Api) -> None:
    created = await _create(someone, title="Old", description="keep", tags=["a"])
    path = f"/api/memories/{created['id']}"

    resp = await someone.patch(path, json={"isFavorite": True})
    assert resp.status == 200, resp.body
    memory = resp.body["memory"]
    assert memory["isFavorite"] is True
    assert memory["isArchived"] is False
    assert memory["title"] == "Old"
    assert memory["description"] == "keep"
    assert memory["updatedAt"] > created["updatedAt"]

    resp = await someone.patch(
        path, json={"isArchived": True, "title": "New", "tags": ["b", "c"], "content": [1]}
    )
    memory = resp.body["memory"]
    assert (memory["isFavorite"], memory["isArchived"]) == (True, True)
    assert memory["title"] == "New"
    assert memory["tags"] == ["b", "c"]
    assert memory["content"] == [1]
    assert memory["createdAt"] == created["createdAt"]

    resp = await someone.patch(path, json={"title": None, "tags": []})
    assert resp.body["memory"]["title"] is None
    assert resp.body["memory"]["tags"] == []

    assert (await someone.get(path)).body["memory"] == resp.body["memory"]


async def test_patch_sets_and_clears_the_category(someone: Api) -> None:
    categories = (await someone.get("/api/categories")).body["categories"]
    created = await _create(someone, title="c", categoryId=categories[0]["id"])
    path = f"/api/memories/{created['id']}"

    moved = await someone.patch(path, json={"categoryId": categories[1]["id"]})
    assert moved.status == 200
    assert moved.body["memory"]["categoryId"] == categories[1]["id"]

    cleared = await someone.patch(path, json={"categoryId": None})
    assert cleared.status == 200
    assert cleared.body["memory"]["categoryId"] is None
    assert (await someone.get(path)).body["memory"]["categoryId"] is None


async def test_patch_validation(someone: Api) -> None:
    created = await _create(someone, title="v")
    path = f"/api/memories/{created['id']}"
    empty = await someone.patch(path, json={})
    assert empty.status == 400
    assert empty.error_code == "validation_failed"
    bad = await someone.patch(path, json={"title": "t" * 256, "tags": ["x" * 51], "nope": 1})
    assert bad.status == 400
    assert _fields_in_error(bad.body) == {"title", "tags[0]", "nope"}
    assert (await someone.get(path)).body["memory"] == created


async def test_delete_needs_the_delete_permission(api: Api, db: Database) -> None:
    user = await api.register()
    memory = await _create(user, title="keep me")
    denied = await user.delete(f"/api/memories/{memory['id']}")
    assert denied.status == 403
    assert denied.error_code == "forbidden"
    assert (await user.get(f"/api/memories/{memory['id']}")).status == 200

    premium = await promote(user, db)
    resp = await premium.delete(f"/api/memories/{memory['id']}")
    assert resp.status == 204
    assert resp.body is None
    gone = await premium.get(f"/api/memories/{memory['id']}")
    assert gone.status == 404
    assert gone.error_code == "not_found"
    again = await premium.delete(f"/api/memories/{memory['id']}")
    assert again.status == 404
    assert (await premium.get("/api/memories")).body["pagination"]["total"] == 0


async def test_deleting_a_memory_deletes_its_messages(api: Api, db: Database) -> None:
    user = await promote(await api.register(), db)
    memory = await _create(user, title="with messages")
    sent = await user.post(f"/api/memories/{memory['id']}/messages", json={"content": "hi"})
    assert sent.status == 201
    assert (await user.delete(f"/api/memories/{memory['id']}")).status == 204
    count = await db.fetchval(
        "SELECT count(*) FROM messages WHERE memory_id = $1", uuid.UUID(memory["id"])
    )
    assert count == 0
    lost = await user.get(f"/api/memories/{memory['id']}/messages/{sent.body['message']['id']}")
    assert lost.status == 404


# -- list -------------------------------------------------------------------------------


async def test_list_defaults_and_pagination(api: Api) -> None:
    user = await api.register()
    empty = await user.get("/api/memories")
    assert empty.status == 200
    assert empty.body == {
        "memories": [],
        "pagination": {"page": 1, "limit": 20, "total": 0, "totalPages": 0},
    }

    for i in range(5):
        await _create(user, title=f"m{i}")
    # Default order: most recently updated first.
    assert await _titles(user) == ["m4", "m3", "m2", "m1", "m0"]

    pages = []
    for page in (1, 2, 3, 4):
        resp = await user.get("/api/memories", params={"page": page, "limit": 2})
        assert resp.status == 200
        assert resp.body["pagination"] == {"page": page, "limit": 2, "total": 5, "totalPages": 3}
        pages.append([m["title"] for m in resp.body["memories"]])
    assert pages == [["m4", "m3"], ["m2", "m1"], ["m0"], []]

    exact = await user.get("/api/memories", params={"limit": 5})
    assert exact.body["pagination"]["totalPages"] == 1
    one = await user.get("/api/memories", params={"limit": 1})
    assert one.body["pagination"]["totalPages"] == 5
    most = await user.get("/api/memories", params={"limit": 100})
    assert most.status == 200
    assert len(most.body["memories"]) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"sortBy": "name"}, "sortBy"),
        ({"sortBy": "created_at; DROP TABLE memories"}, "sortBy"),
        ({"sortOrder": "up"}, "sortOrder"),
        ({"categoryId": "x"}, "categoryId"),
        ({"bogus": "1"}, "bogus"),
    ],
)
async def test_list_rejects_bad_parameters(
    someone: Api, params: dict[str, Any], field: str
) -> None:
    resp = await someone.get("/api/memories", params=params)
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert field in _fields_in_error(resp.body)


async def test_list_by_category(api: Api) -> None:
    user = await api.register()
    work, personal = (await user.get("/api/categories")).body["categories"][:2]
    await _create(user, title="w1", categoryId=work["id"])
    await _create(user, title="p1", categoryId=personal["id"])
    await _create(user, title="w2", categoryId=work["id"])
    await _create(user, title="none")
    assert await _titles(user, categoryId=work["id"]) == ["w2", "w1"]
    assert await _titles(user, categoryId=personal["id"]) == ["p1"]
    assert await _titles(user, categoryId=str(uuid.uuid4())) == []
    resp = await user.get("/api/memories", params={"categoryId": work["id"], "limit": 1})
    assert resp.body["pagination"]["total"] == 2


async def test_search_title_description_content_and_tags(api: Api) -> None:
    user = await api.register()
    await _create(user, title="Dinner at ROSA's", description="plain")
    await _create(user, title="a", description="We went to rosarium gardens")
    await _create(user, title="b", content={"note": "Rosa called"})
    await _create(user, title="c", tags=["RoSa", "x"])
    await _create(user, title="d", description="nothing here")

    found = await _titles(user, search="rosa", sortBy="title", sortOrder="asc")
    assert found == ["a", "b", "c", "Dinner at ROSA's"]
    assert await _titles(user, search="  ROSA  ", sortBy="title", sortOrder="asc") == found
    assert await _titles(user, search="nothing") == ["d"]
    assert await _titles(user, search="absent") == []
    resp = await user.get("/api/memories", params={"search": "rosa", "limit": 3})
    assert resp.body["pagination"] == {"page": 1, "limit": 3, "total": 4, "totalPages": 2}


async def test_search_treats_like_wildcards_literally(api: Api) -> None:
    user = await api.register()
    await _create(user, title="100% sure")
    await _create(user, title="1000 sure")
    await _create(user, title="snake_case")
    await _create(user, title="snakeXcase")
    await _create(user, title="back\\slash")
    await _create(user, title="backslash")
    assert await _titles(user, search="100%") == ["100% sure"]
    assert await _titles(user, search="%") == ["100% sure"]
    assert await _titles(user, search="e_c") == ["snake_case"]
    assert await _titles(user, search="_") == ["snake_case"]
    assert await _titles(user, search="k\\s") == ["back\\slash"]


async def test_search_looks_at_content_values_not_its_json_text(api: Api) -> None:
    user = await api.register()
    await _create(user, title="a", content={"note": "plain words"})
    await _create(user, title="b", content={"text": 'she said "hi" \\o/'})
    await _create(user, title="c", content=["list", {"deep": [42]}])
    await _create(user, title="d", content="just a string")
    assert await _titles(user, search="plain") == ["a"]
    assert await _titles(user, search="note") == []  # a key, not something the user wrote
    assert await _titles(user, search="text") == []
    assert await _titles(user, search='said "hi" \\o') == ["b"]
    assert await _titles(user, search="42") == ["c"]
    assert await _titles(user, search="deep") == []
    assert await _titles(user, search='": "') == []
    assert await _titles(user, search="a string") == ["d"]


async def test_tags_filter_needs_every_tag(api: Api) -> None:
    user = await api.register()
    await _create(user, title="ab", tags=["a", "b"])
    await _create(user, title="a", tags=["a"])
    await _create(user, title="abc", tags=["a", "b", "c"])
    await _create(user, title="none")

    by = "title"
    assert await _titles(user, tags="a", sortBy=by, sortOrder="asc") == ["a", "ab", "abc"]
    assert await _titles(user, tags="a,b", sortBy=by, sortOrder="asc") == ["ab", "abc"]
    assert await _titles(user, tags=" b , c ", sortBy=by) == ["abc"]
    assert await _titles(user, tags="A") == []  # tags match exactly
    assert await _titles(user, tags="z") == []
    repeated = await user.get(
        "/api/memories", params=[("tags", "a"), ("tags", "b"), ("sortBy", by)]
    )
    assert repeated.status == 200
    assert [m["title"] for m in repeated.body["memories"]] == ["abc", "ab"]
    assert repeated.body["pagination"]["total"] == 2
    bracket = await user.get("/api/memories", params=[("tags[]", "b"), ("tags[]", "c")])
    assert [m["title"] for m in bracket.body["memories"]] == ["abc"]
    too_many = await user.get("/api/memories", params={"tags": ",".join("abcdefghijk")})
    assert too_many.status == 400


async def test_sorting(api: Api) -> None:
    user = await api.register()
    first = await _create(user, title="banana")
    await _create(user, title="Apple")
    await _create(user, title="cherry")
    await _create(user)  # no title: last either way
    # Touch the oldest so that updated_at and created_at orders differ.
    touched = await user.patch(f"/api/memories/{first['id']}", json={"isFavorite": True})
    assert touched.status == 200

    assert await _titles(user, sortBy="created_at") == [None, "cherry", "Apple", "banana"]
    assert await _titles(user, sortBy="created_at", sortOrder="asc") == [
        "banana",
        "Apple",
        "cherry",
        None,
    ]
    assert await _titles(user, sortBy="updated_at") == ["banana", None, "cherry", "Apple"]
    assert await _titles(user, sortBy="updated_at", sortOrder="asc") == [
        "Apple",
        "cherry",
        None,
        "banana",
    ]
    assert await _titles(user) == await _titles(user, sortBy="updated_at", sortOrder="desc")
    assert await _titles(user, sortBy="title") == ["cherry", "banana", "Apple", None]
    assert await _titles(user, sortBy="title", sortOrder="asc") == [
        "Apple",
        "banana",
        "cherry",
        None,
    ]


async def test_filters_combine(api: Api) -> None:
    user = await api.register()
    work = (await user.get("/api/categories")).body["categories"][0]
    await _create(user, title="work rosa", categoryId=work["id"], tags=["t"])
    await _create(user, title="work other", categoryId=work["id"], tags=["t"])
    await _create(user, title="home rosa", tags=["t"])
    await _create(user, title="work rosa untagged", categoryId=work["id"])
    titles = await _titles(user, categoryId=work["id"], search="rosa", tags="t")
    assert titles == ["work rosa"]


async def test_favorite_and_archived_filters(api: Api) -> None:
    user = await api.register()
    await _create(user, title="plain")
    await _create(user, title="fav", isFavorite=True)
    await _create(user, title="old", isArchived=True)
    await _create(user, title="both", isFavorite=True, isArchived=True)
    by_title = {"sortBy": "title", "sortOrder": "asc"}
    assert await _titles(user, isFavorite="true", **by_title) == ["both", "fav"]
    assert await _titles(user, isFavorite="false", **by_title) == ["old", "plain"]
    assert await _titles(user, isArchived="true", **by_title) == ["both", "old"]
    assert await _titles(user, isArchived="false", isFavorite="true") == ["fav"]
    assert len(await _titles(user)) == 4
    bad = await user.get("/api/memories", params={"isFavorite": "maybe"})
    assert bad.status == 400


async def test_memories_need_authentication(api: Api) -> None:
    assert (await api.get("/api/memories")).status == 401
    assert (await api.get(f"/api/memories/{uuid.uuid4()}")).status == 401
