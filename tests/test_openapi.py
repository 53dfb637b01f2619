"""The served OpenAPI document: valid 3.1, in step with the routes, true to real answers."""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from memoryd.server.routes import web as browser_client
from tests.helpers import PASSWORD, Api, Response

pytestmark = pytest.mark.storage

_DOC_URI = "urn:memoryd:openapi"
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _strict(document: dict[str, Any]) -> dict[str, Any]:
    """A copy whose objects allow no undocumented keys: a real answer must not have any."""
    doc = copy.deepcopy(document)
    for schema in doc["components"]["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return doc


class Contract:
    """Checks real responses against what the document says of them."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = _strict(document)
        self.registry: Registry[Any] = Registry().with_resource(
            _DOC_URI, DRAFT202012.create_resource(self.doc)
        )

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = node.get("$ref")
        if ref is None:
            return node, None
        assert ref.startswith("#/"), ref
        target: Any = self.doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target, ref[1:]

    def check(self, resp: Response, method: str, path: str) -> None:
        operation = self.doc["paths"][path][method.lower()]
        status = str(resp.status)
        documented = operation["responses"].get(status)
        assert documented is not None, f"{method} {path}: undocumented {status}: {resp.body}"
        pointer = _pointer("paths", path, method.lower(), "responses", status)
        documented, ref_pointer = self._resolve(documented)
        pointer = ref_pointer or pointer

        sent = {name.lower() for name in resp.headers}
        for name, header in documented.get("headers", {}).items():
            header, _ = self._resolve(header)
            if header.get("required"):
                assert name.lower() in sent, f"{method} {path} {status}: no {name} header"

        content = documented.get("content")
        if content is None:
            assert resp.body is None, f"{method} {path} {status}: body {resp.body!r}"
            return
        media = next(iter(content))
        assert resp.headers["Content-Type"].split(";")[0] == media.split(";")[0]
        schema = {"$ref": _DOC_URI + "#" + pointer + _pointer("content", media, "schema")}
        validator = Draft202012Validator(
            schema, registry=self.registry, format_checker=FormatChecker()
        )
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(resp.body)]
        assert not errors, f"{method} {path} {status} does not match the document: {errors}"


@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    resp = await api.get("/api/openapi.json")
    assert resp.status == 200
    assert isinstance(resp.body, dict)
    return resp.body


@pytest.fixture
def contract(document: dict[str, Any]) -> Contract:
    return Contract(document)


# -- the document itself ---------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_nothing_else(server: Any, document: dict[str, Any]) -> None:
    registered = set()
    for route in server.app.router.routes():
        resource = route.resource
        if route.method == "HEAD" or resource is None:
            continue
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)  # {id:\d+} -> {id}
        if path == "/ws" or path in browser_client.PATHS:  # the socket; the web app's files
            continue
        registered.add((route.method.upper(), path))
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in _METHODS
    }
    assert not registered - documented, (
        f"routes missing from the document: {registered - documented}"
    )
    assert not documented - registered, f"documented but not routed: {documented - registered}"


def test_path_parameters_match_the_templates(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        in_template = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            params = [*item.get("parameters", []), *operation.get("parameters", [])]
            declared = {p["name"] for p in params if p.get("in") == "path"}
            assert declared == in_template, f"{method.upper()} {path}: {declared}"


def test_operations_name_their_permission(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            if "security" in operation:
                assert "401" in operation["responses"], f"{method} {path}"
            if "403" in operation["responses"]:
                assert "Requires `" in operation.get("description", ""), f"{method} {path}"


# -- real answers ------------------------------------------------------------------------------


async def test_service_endpoints_match(api: Api, contract: Contract) -> None:
    for path in ("/health", "/ready", "/api/openapi.json", "/metrics"):
        resp = await api.get(path)
        assert resp.status == 200, (path, resp.body)
        contract.check(resp, "GET", path)


async def test_auth_answers_match(api: Api, contract: Contract) -> None:
    body = {
        "email": f"openapi-{uuid.uuid4().hex[:12]}@example.com",
        "password": PASSWORD,
        "firstName": "Open",
        "lastName": "Api",
    }
    resp = await api.post("/api/auth/register", json=body)
    assert resp.status == 201, resp.body
    contract.check(resp, "POST", "/api/auth/register")

    again = await api.post("/api/auth/register", json=body)
    assert again.status == 409, again.body
    contract.check(again, "POST", "/api/auth/register")

    form = {"email": body["email"], "password": PASSWORD, "rememberMe": "on"}
    login = await api.post("/api/auth/login", data=form)
    assert login.status == 200, login.body
    contract.check(login, "POST", "/api/auth/login")

    wrong = await api.post("/api/auth/login", json={**form, "password": "nope", "rememberMe": 1})
    assert wrong.status == 400, wrong.body  # rememberMe must be a boolean in JSON
    contract.check(wrong, "POST", "/api/auth/login")

    user = api.as_user(login.body["accessToken"])
    me = await user.get("/api/users/me")
    assert me.status == 200
    contract.check(me, "GET", "/api/users/me")

    refreshed = await api.post(
        "/api/auth/refresh", json={"refreshToken": login.body["refreshToken"]}
    )
    assert refreshed.status == 200, refreshed.body
    contract.check(refreshed, "POST", "/api/auth/refresh")

    out = await user.post("/api/auth/logout", json={"allDevices": True})
    assert out.status == 204, out.body
    contract.check(out, "POST", "/api/auth/logout")


async def test_resource_answers_match(api: Api, contract: Contract) -> None:
    user = await api.register()

    anonymous = await api.get("/api/memories")
    assert anonymous.status == 401
    contract.check(anonymous, "GET", "/api/memories")

    categories = await user.get("/api/categories")
    assert categories.status == 200
    contract.check(categories, "GET", "/api/categories")

    created = await user.post(
        "/api/memories",
        json={"title": "Trip", "tags": ["travel"], "content": {"any": ["json"]}},
    )
    assert created.status == 201, created.body
    contract.check(created, "POST", "/api/memories")
    memory_id = created.body["memory"]["id"]

    listed = await user.get("/api/memories", params={"tags": "travel", "limit": "5"})
    assert listed.status == 200, listed.body
    assert listed.body["memories"]
    contract.check(listed, "GET", "/api/memories")

    invalid = await user.post("/api/memories", json={"title": 5, "bogus": True})
    assert invalid.status == 400
    assert {d["field"] for d in invalid.body["error"]["details"]} == {"title", "bogus"}
    contract.check(invalid, "POST", "/api/memories")

    not_json = await user.post(
        "/api/memories", data=b"title", headers={"Content-Type": "text/plain"}
    )
    assert not_json.status == 415
    contract.check(not_json, "POST", "/api/memories")

    missing = await user.get(f"/api/memories/{uuid.uuid4()}")
    assert missing.status == 404
    contract.check(missing, "GET", "/api/memories/{id}")

    forbidden = await user.delete(f"/api/memories/{memory_id}")  # a plain user may not delete
    assert forbidden.status == 403
    contract.check(forbidden, "DELETE", "/api/memories/{id}")

    one = await user.get(f"/api/memories/{memory_id}")
    assert one.status == 200
    contract.check(one, "GET", "/api/memories/{id}")


async def test_message_answers_match(api: Api, contract: Contract) -> None:
    user = await api.register()
    memory = await user.post("/api/memories", json={"title": "Chat"})
    memory_id = memory.body["memory"]["id"]
    messages = f"/api/memories/{memory_id}/messages"
    template = "/api/memories/{id}/messages"

    key = {"Idempotency-Key": uuid.uuid4().hex}
    sent = await user.post(messages, json={"content": "hello"}, headers=key)
    assert sent.status == 201, sent.body
    contract.check(sent, "POST", template)

    replayed = await user.post(messages, json={"content": "hello"}, headers=key)
    assert replayed.status == 201
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.body == sent.body
    contract.check(replayed, "POST", template)
    documented = contract.doc["paths"][template]["post"]["responses"]["201"]["headers"]
    assert "Idempotent-Replayed" in documented

    listed = await user.get(messages, params={"sortOrder": "asc"})
    assert listed.status == 200
    contract.check(listed, "GET", template)

    message_id = sent.body["message"]["id"]
    one = await user.get(f"{messages}/{message_id}")
    assert one.status == 200
    contract.check(one, "GET", template + "/{messageId}")

    edited = await user.patch(f"{messages}/{message_id}", json={"content": "hello again"})
    assert edited.status == 200, edited.body
    contract.check(edited, "PATCH", template + "/{messageId}")

    read = await user.post(f"/api/memories/{memory_id}/read", json={"seq": 1})
    assert read.status == 200, read.body
    contract.check(read, "POST", "/api/memories/{id}/read")
