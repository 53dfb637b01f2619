"""/api/categories: the defaults, create, validation, rename, delete, ownership."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import RunningServer
from tests.helpers import Api

pytestmark = pytest.mark.storage

DEFAULT_NAMES = [
    "Work",
    "Personal",
    "Family",
    "Learning",
    "Travel",
    "Health",
    "Finance",
    "Creative",
]


@pytest_asyncio.fixture(scope="module")
async def someone(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    """One user for the tests that change nothing."""
    return await Api(http, server.url).register()


async def _create(client: Api, **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/categories", json={"name": "Ideas", **fields})
    assert resp.status == 201, resp.body
    return resp.body["category"]  # type: ignore[no-any-return]


def _fields_in_error(body: Any) -> set[str | None]:
    return {d["field"] for d in body["error"]["details"]}


async def test_a_new_user_has_the_eight_default_categories_in_order(api: Api) -> None:
    user = await api.register()
    resp = await user.get("/api/categories")
    assert resp.status == 200
    categories = resp.body["categories"]
    assert [c["name"] for c in categories] == DEFAULT_NAMES
    assert [c["sortOrder"] for c in categories] == list(range(8))
    assert all(c["isDefault"] for c in categories)
    assert all(c["userId"] == user.user["id"] for c in categories)  # type: ignore[attr-defined]
    assert categories[0]["icon"] == "briefcase"
    assert categories[0]["color"] == "#3B82F6"


async def test_create_returns_201_and_the_list_keeps_sort_order_then_name(api: Api) -> None:
    user = await api.register()
    resp = await user.post(
        "/api/categories",
        json={
            "name": "Zebra",
            "description": "stripes",
            "icon": "star",
            "color": "#a1B2c3",
            "sortOrder": 3,
        },
    )
    assert resp.status == 201, resp.body
    category = resp.body["category"]
    assert set(resp.body) == {"category"}
    assert category["name"] == "Zebra"
    assert category["description"] == "stripes"
    assert category["icon"] == "star"
    assert category["color"] == "#a1B2c3"
    assert category["sortOrder"] == 3
    assert category["isDefault"] is False
    uuid.UUID(category["id"])

    await _create(user, name="apple", sortOrder=3)
    names = [c["name"] for c in (await user.get("/api/categories")).body["categories"]]
    # sortOrder 3 holds Learning (default), then the new ones, by name ignoring case.
    assert names == [
        "Work",
        "Personal",
        "Family",
        "apple",
        "Learning",
        "Zebra",
        "Travel",
        "Health",
        "Finance",
        "Creative",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "color": "red"}, "color"),
        ({"name": "ok", "color": "#12345"}, "color"),
        ({"name": "ok", "color": "#1234567"}, "color"),
        ({"name": "ok", "color": "#GGGGGG"}, "color"),
        ({"name": "ok", "icon": "i" * 51}, "icon"),
        ({"name": "ok", "description": "d" * 1001}, "description"),
        ({"name": "ok", "sortOrder": -1}, "sortOrder"),
        ({"name": "ok", "isDefault": True}, "isDefault"),
        ({"name": "ok", "userId": str(uuid.uuid4())}, "userId"),
    ],
)
async def test_create_validation(someone: Api, body: dict[str, Any], field: str) -> None:
    user = someone
    resp = await user.post("/api/categories", json=body)
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert field in _fields_in_error(resp.body)
    names = [c["name"] for c in (await user.get("/api/categories")).body["categories"]]
    assert names == DEFAULT_NAMES


async def test_name_of_100_characters_is_accepted(api: Api) -> None:
    user = await api.register()
    category = await _create(user, name="n" * 100, color="#000000")
    assert category["name"] == "n" * 100


async def test_duplicate_name_ignoring_case_is_409(api: Api) -> None:
    user = await api.register()
    for name in ("work", "WORK", "Work"):
        resp = await user.post("/api/categories", json={"name": name})
        assert resp.status == 409, (name, resp.body)
        assert resp.error_code == "conflict"
        assert _fields_in_error(resp.body) == {"name"}
    await _create(user, name="Ideas")
    resp = await user.post("/api/categories", json={"name": "iDeAs"})
    assert resp.status == 409
    assert len((await user.get("/api/categories")).body["categories"]) == 9


async def test_another_user_may_use_the_same_name(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    await _create(alice, name="Shared name")
    await _create(bob, name="shared NAME")


async def test_patch_changes_only_the_given_fields(api: Api) -> None:
    user = await api.register()
    created = await _create(user, name="Ideas", color="#111111", icon="bulb")
    resp = await user.patch(
        f"/api/categories/{created['id']}", json={"name": "Big ideas", "description": None}
    )
    assert resp.status == 200, resp.body
    updated = resp.body["category"]
    assert updated["id"] == created["id"]
    assert updated["name"] == "Big ideas"
    assert updated["color"] == "#111111"
    assert updated["icon"] == "bulb"
    assert updated["description"] is None
    assert updated["updatedAt"] >= created["updatedAt"]

    resp = await user.patch(f"/api/categories/{created['id']}", json={"color": None})
    assert resp.status == 200
    assert resp.body["category"]["color"] is None
    assert resp.body["category"]["name"] == "Big ideas"


async def test_patch_validation_and_conflicts(api: Api) -> None:
    user = await api.register()
    created = await _create(user, name="Ideas")
    path = f"/api/categories/{created['id']}"

    empty = await user.patch(path, json={})
    assert empty.status == 400
    assert empty.error_code == "validation_failed"

    bad = await user.patch(path, json={"color": "blue", "name": ""})
    assert bad.status == 400
    assert _fields_in_error(bad.body) == {"color", "name"}

    unknown = await user.patch(path, json={"userId": str(uuid.uuid4())})
    assert unknown.status == 400
    assert _fields_in_error(unknown.body) == {"userId"}

    clash = await user.patch(path, json={"name": "TRAVEL"})
    assert clash.status == 409
    assert clash.error_code == "conflict"

    same = await user.patch(path, json={"name": "IDEAS"})  # its own name, another case
    assert same.status == 200, same.body
    assert same.body["category"]["name"] == "IDEAS"


async def test_delete_is_204_and_keeps_its_memories_uncategorised(api: Api) -> None:
    user = await api.register()
    category = await _create(user, name="Doomed")
    memory_ids = []
    for title in ("one", "two"):
        resp = await user.post("/api/memories", json={"title": title, "categoryId": category["id"]})
        assert resp.status == 201
        assert resp.body["memory"]["categoryId"] == category["id"]
        memory_ids.append(resp.body["memory"]["id"])

    resp = await user.delete(f"/api/categories/{category['id']}")
    assert resp.status == 204
    assert resp.body is None

    names = [c["name"] for c in (await user.get("/api/categories")).body["categories"]]
    assert "Doomed" not in names
    for memory_id in memory_ids:
        got = await user.get(f"/api/memories/{memory_id}")
        assert got.status == 200
        assert got.body["memory"]["categoryId"] is None
    listed = await user.get("/api/memories", params={"categoryId": category["id"]})
    assert listed.status == 200
    assert listed.body["memories"] == []

    again = await user.delete(f"/api/categories/{category['id']}")
    assert again.status == 404
    assert again.error_code == "not_found"


async def test_a_default_category_can_be_deleted(api: Api) -> None:
    user = await api.register()
    work = (await user.get("/api/categories")).body["categories"][0]
    assert (await user.delete(f"/api/categories/{work['id']}")).status == 204
    names = [c["name"] for c in (await user.get("/api/categories")).body["categories"]]
    assert names == DEFAULT_NAMES[1:]


@pytest.mark.parametrize("category_id", [str(uuid.uuid4()), "not-a-uuid", "123"])
async def test_unknown_or_malformed_id_is_404(someone: Api, category_id: str) -> None:
    user = someone
    patch = await user.patch(f"/api/categories/{category_id}", json={"name": "x"})
    assert patch.status == 404, patch.body
    assert patch.error_code == "not_found"
    delete = await user.delete(f"/api/categories/{category_id}")
    assert delete.status == 404
    assert delete.error_code == "not_found"


async def test_another_users_category_is_404_and_unchanged(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    category = await _create(alice, name="Private")
    path = f"/api/categories/{category['id']}"

    patch = await bob.patch(path, json={"name": "Stolen"})
    assert patch.status == 404
    assert patch.error_code == "not_found"
    delete = await bob.delete(path)
    assert delete.status == 404

    mine = (await alice.get("/api/categories")).body["categories"]
    assert [c for c in mine if c["id"] == category["id"]] == [category]
    theirs = (await bob.get("/api/categories")).body["categories"]
    assert category["id"] not in {c["id"] for c in theirs}


async def test_categories_need_authentication(api: Api) -> None:
    assert (await api.get("/api/categories")).status == 401
    assert (await api.post("/api/categories", json={"name": "x"})).status == 401
