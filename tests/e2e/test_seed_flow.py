"""The seed plan's own integration test flow, against a real server."""

from __future__ import annotations

import pytest

from tests.helpers import Api

pytestmark = pytest.mark.storage


async def test_register_create_memory_then_unauthenticated_is_401(api: Api) -> None:
    resp = await api.post(
        "/api/auth/register",
        json={
            "email": "seed-flow@example.com",
            "password": "TestPassword123!",
            "firstName": "Test",
            "lastName": "User",
        },
    )
    assert resp.status == 201
    token = resp.body["accessToken"]
    assert resp.body["user"]["email"] == "seed-flow@example.com"

    created = await api.post(
        "/api/memories",
        json={
            "title": "Test Memory",
            "description": "Test Description",
            "content": {"text": "Test content"},
        },
        token=token,
    )
    assert created.status == 201
    assert created.body["memory"]["title"] == "Test Memory"
    assert created.body["memory"]["content"] == {"text": "Test content"}

    anonymous = await api.post("/api/memories", json={"title": "Test Memory"})
    assert anonymous.status == 401
    assert anonymous.error_code == "unauthorized"
