"""HTTP-level errors: every one is a JSON error body, and every response has a request id."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import RunningServer, StartServer
from tests.helpers import Api, Response

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def someone(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    return await Api(http, server.url).register()


def _assert_error(resp: Response, status: int, code: str) -> None:
    assert resp.status == status, resp.body
    assert (resp.header("Content-Type") or "").startswith("application/json")
    assert resp.error_code == code, resp.body
    assert set(resp.body["error"]) == {"code", "message", "details"}
    assert isinstance(resp.body["error"]["message"], str)
    assert resp.body["error"]["message"]


async def _raw(
    client: Api, method: str, path: str, *, data: bytes | str, content_type: str | None
) -> Response:
    headers = {"Authorization": f"Bearer {client.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.request(method, path, data=data, headers=headers)


async def test_unknown_route_is_a_json_404(someone: Api) -> None:
    for path in ("/nope", "/api/nope", "/api/memories/a/b/c/d"):
        _assert_error(await someone.get(path), 404, "not_found")
    _assert_error(await someone.post("/api/unknown", json={}), 404, "not_found")


async def test_wrong_method_is_a_json_405_with_allow(someone: Api) -> None:
    resp = await someone.request("PUT", "/api/memories")
    _assert_error(resp, 405, "method_not_allowed")
    assert {m.strip() for m in (resp.header("Allow") or "").split(",")} >= {"GET", "POST"}
    patch = await someone.patch("/api/categories", json={"name": "x"})
    _assert_error(patch, 405, "method_not_allowed")
    get_one = await someone.get(f"/api/categories/{uuid.uuid4()}")
    _assert_error(get_one, 405, "method_not_allowed")
    assert "PATCH" in (get_one.header("Allow") or "")
    assert "GET" not in (get_one.header("Allow") or "")


@pytest.mark.parametrize("body", ["{", '{"title": }', "{'title': 'x'}", "\xff", '{"a":1}x'])
async def test_malformed_json_is_invalid_json(someone: Api, body: str) -> None:
    resp = await _raw(someone, "POST", "/api/memories", data=body, content_type="application/json")
    _assert_error(resp, 400, "invalid_json")


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"text"', "42", "null", "true"])
async def test_a_json_body_must_be_an_object(someone: Api, body: str) -> None:
    resp = await _raw(someone, "POST", "/api/memories", data=body, content_type="application/json")
    _assert_error(resp, 400, "validation_failed")
    before = await someone.get("/api/memories")
    assert before.status == 200


async def test_an_empty_json_body_is_an_empty_object(someone: Api) -> None:
    resp = await _raw(someone, "POST", "/api/memories", data="", content_type="application/json")
    assert resp.status == 201, resp.body


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_is_not_json_is_415(someone: Api, content_type: str) -> None:
    resp = await _raw(
        someone, "POST", "/api/memories", data='{"title": "x"}', content_type=content_type
    )
    _assert_error(resp, 415, "unsupported_media_type")


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(someone: Api) -> None:
    body = json.dumps({"title": "charset"})
    for ctype in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = await _raw(someone, "POST", "/api/memories", data=body, content_type=ctype)
        assert resp.status == 201, (ctype, resp.body)
        assert resp.body["memory"]["title"] == "charset"


async def test_a_body_over_the_limit_is_413(
    start_server: StartServer, http: aiohttp.ClientSession, someone: Api
) -> None:
    small = await start_server(max_body_bytes=2048)
    client = Api(http, small.url, someone.token)
    fits = await client.post("/api/memories", json={"description": "x" * 900})
    assert fits.status == 201, fits.body

    too_big = await client.post("/api/memories", json={"description": "x" * 3000})
    _assert_error(too_big, 413, "payload_too_large")
    memory_id = fits.body["memory"]["id"]
    message = await client.post(f"/api/memories/{memory_id}/messages", json={"content": "y" * 5000})
    _assert_error(message, 413, "payload_too_large")
    assert too_big.header("X-Request-Id") is not None
    # Nothing was stored.
    listed = await client.get(f"/api/memories/{memory_id}/messages")
    assert listed.body["messages"] == []


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "unauthorized"),
        ("", "unauthorized"),
        ("Bearer", "unauthorized"),
        ("Bearer ", "unauthorized"),
        ("Basic dXNlcjpwYXNz", "unauthorized"),
        ("Token abc", "unauthorized"),
        ("Bearer garbage", "invalid_token"),
        ("Bearer a.b.c", "invalid_token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "invalid_token"),
    ],
)
async def test_missing_or_bad_authorization_is_401(api: Api, header: str | None, code: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (
        ("GET", "/api/memories"),
        ("POST", "/api/memories"),
        ("GET", "/api/categories"),
        ("GET", f"/api/memories/{uuid.uuid4()}/messages"),
        ("DELETE", f"/api/memories/{uuid.uuid4()}"),
    ):
        resp = await api.request(method, path, json={}, headers=headers)
        _assert_error(resp, 401, code)


async def test_a_refresh_token_is_not_an_access_token(someone: Api) -> None:
    resp = await someone.get("/api/memories", token=someone.refresh_token)  # type: ignore[attr-defined]
    _assert_error(resp, 401, "invalid_token")


async def test_every_response_has_a_request_id(someone: Api, api: Api) -> None:
    ids = set()
    for resp in (
        await someone.get("/api/memories"),
        await someone.post("/api/memories", json={"title": "rid"}),
        await someone.get("/nope"),
        await someone.request("PUT", "/api/memories"),
        await api.get("/api/memories"),
        await api.get("/health"),
        await api.get("/metrics"),
    ):
        rid = resp.header("X-Request-Id")
        assert rid, resp.status
        ids.add(rid)
    assert len(ids) == 7


async def test_a_given_request_id_is_echoed(someone: Api) -> None:
    rid = f"client-{uuid.uuid4()}"
    ok = await someone.get("/api/memories", headers={"X-Request-Id": rid})
    assert ok.header("X-Request-Id") == rid
    error = await someone.get("/api/nope", headers={"X-Request-Id": rid})
    assert error.status == 404
    assert error.header("X-Request-Id") == rid


@pytest.mark.parametrize("given", ["x" * 129, "has space", 'quote"d', "semi;colon", "é"])
async def test_an_untame_request_id_is_replaced(someone: Api, given: str) -> None:
    resp = await someone.get("/api/memories", headers={"X-Request-Id": given})
    assert resp.status == 200
    rid = resp.header("X-Request-Id")
    assert rid
    assert rid != given
    assert len(rid) <= 128
