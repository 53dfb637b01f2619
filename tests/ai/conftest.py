"""Memo's tests: nodes on databases of their own, and a fake OpenAI-compatible server.

Every memoryd app runs a job runner, and every runner of a database takes ``ai.reply``
jobs. The other tests' servers share the session database and answer with the local
responder, so a reply job there could be run by any of them. Each node here gets its own
database (a copy of a migrated template), so its jobs run on it, or on the runners a test
adds on purpose.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest_asyncio
from aiohttp import web

from memoryd.config import Settings
from memoryd.handlers.context import Services
from memoryd.server.app import create_app
from memoryd.server.keys import SERVICES
from memoryd.storage.database import Database, create_database_if_missing, drop_database
from memoryd.storage.migrate import migrate
from tests.fakes.openai import FakeOpenAI
from tests.helpers import Api, promote


def _dsn(admin_dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))


@dataclass
class Node:
    url: str
    app: web.Application
    api: Api  # anonymous; `register()` gives a user

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def db(self) -> Database:
        return self.services.store.db

    @property
    def ws(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    async def premium(self, role: str = "premium") -> Api:
        return await promote(await self.api.register(), self.db, role)


StartNode = Callable[..., Awaitable[Node]]


@pytest_asyncio.fixture(scope="session")
async def ai_template(admin_dsn: str) -> AsyncIterator[str]:
    name = f"memoryd_ai_tpl_{uuid.uuid4().hex[:10]}"
    await create_database_if_missing(admin_dsn, name)
    await migrate(_dsn(admin_dsn, name))
    yield name
    await drop_database(admin_dsn, name)


@pytest_asyncio.fixture
async def start_node(
    admin_dsn: str, ai_template: str, base_settings: Settings, http: aiohttp.ClientSession
) -> AsyncIterator[StartNode]:
    started: list[tuple[web.AppRunner, str]] = []

    async def start(**overrides: Any) -> Node:
        name = f"memoryd_ai_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{ai_template}"')
        finally:
            await conn.close()
        settings = base_settings.replace(database_url=_dsn(admin_dsn, name), **overrides)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started.append((runner, name))
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return Node(url, app, Api(http, url))

    yield start
    for runner, name in reversed(started):
        await runner.cleanup()
        await drop_database(admin_dsn, name)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest_asyncio.fixture
async def node(start_node: StartNode, fake: FakeOpenAI) -> Node:
    """A node whose Memo is the fake OpenAI server."""
    return await start_node(openai_base_url=fake.url + "/v1", openai_api_key="test")
