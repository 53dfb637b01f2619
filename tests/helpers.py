"""A small REST client for the tests, speaking plain HTTP to a real server."""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from memoryd.storage.database import Database
from memoryd.storage.users import UserStore

PASSWORD = "Passw0rd!"


async def stop_app(runner: web.AppRunner, *, report_after: float = 30.0) -> None:
    """``runner.cleanup()``; one still waiting after ``report_after`` seconds prints every
    task's stack, so a log shows what a shutdown that hangs is waiting for."""
    cleanup = asyncio.ensure_future(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=report_after)
    if not done:
        print(f"app shutdown still waiting after {report_after:.0f} s:", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
    await cleanup


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A response header, looked up ignoring case (as HTTP does)."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return str(value)
        return None

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


class Api:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self.session = session
        self.url = url
        self.token = token

    def as_user(self, token: str | None) -> Api:
        return Api(self.session, self.url, token)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        bearer = token or self.token
        if bearer and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {bearer}"
        async with self.session.request(
            method, self.url + path, json=json, data=data, params=params, headers=all_headers
        ) as resp:
            raw = await resp.read()
            try:
                body = await resp.json(content_type=None) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return Response(resp.status, body, dict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Response:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Response:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.request("DELETE", path, **kw)

    async def register(self, **fields: Any) -> Api:
        """Register a fresh user; return a client acting as that user (``.user`` set)."""
        body = {
            "email": f"user-{uuid.uuid4().hex[:12]}@example.com",
            "password": PASSWORD,
            "firstName": "Test",
            "lastName": "User",
            **fields,
        }
        resp = await self.post("/api/auth/register", json=body, token="")
        assert resp.status == 201, resp.body
        client = self.as_user(resp.body["accessToken"])
        client.user = resp.body["user"]  # type: ignore[attr-defined]
        client.refresh_token = resp.body["refreshToken"]  # type: ignore[attr-defined]
        client.email = body["email"]  # type: ignore[attr-defined]
        return client


async def promote(client: Api, db: Database, role: str = "premium") -> Api:
    """Give ``client``'s user ``role`` and log in again (the role travels in the token)."""
    email: str = client.email  # type: ignore[attr-defined]
    assert await UserStore(db).set_role(email, role) is not None
    anonymous = Api(client.session, client.url)
    resp = await anonymous.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert resp.status == 200, resp.body
    assert resp.body["user"]["role"] == role
    promoted = client.as_user(resp.body["accessToken"])
    promoted.user = resp.body["user"]  # type: ignore[attr-defined]
    promoted.refresh_token = resp.body["refreshToken"]  # type: ignore[attr-defined]
    promoted.email = email  # type: ignore[attr-defined]
    return promoted
