"""Shared fixtures: one real PostgreSQL per run, real servers on random ports.

The database is the embedded PostgreSQL 18 (started once per run in a temporary
directory), or the server at ``TEST_DATABASE_URL`` when that is set. Each run creates its
own database there and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from memoryd.config import RateLimit, Settings
from memoryd.server.app import create_app
from memoryd.server.keys import SETTINGS
from memoryd.storage.database import create_database_if_missing, drop_database
from memoryd.storage.embedded import EmbeddedPostgres
from memoryd.storage.migrate import migrate
from tests.helpers import Api, stop_app

OFF = RateLimit(0, 1)


def _dsn_with_database(admin_dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its base is mode 0700, which the unprivileged user that runs
    # the embedded PostgreSQL (when tests run as root) could not enter.
    path = Path(tempfile.mkdtemp(prefix="memoryd-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_dsn(scratch_dir: Path) -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(scratch_dir / "pg", fast_unsafe=True)
    dsn = server.start()
    yield dsn
    server.stop()


@pytest_asyncio.fixture(scope="session")
async def database_url(admin_dsn: str) -> AsyncIterator[str]:
    name = f"memoryd_test_{uuid.uuid4().hex[:12]}"
    await create_database_if_missing(admin_dsn, name)
    dsn = _dsn_with_database(admin_dsn, name)
    await migrate(dsn)
    yield dsn
    await drop_database(admin_dsn, name)


@pytest.fixture(scope="session")
def base_settings(database_url: str, scratch_dir: Path) -> Settings:
    """Settings for test servers: real database, rate limits off unless a test sets them."""
    return Settings(
        data_dir=scratch_dir / "node",
        database_url=database_url,
        log_level="warning",
        rate_limit_auth=OFF,
        rate_limit_api=OFF,
        rate_limit_upload=OFF,
        rate_limit_ai=OFF,
        db_pool_min=1,
        db_pool_max=10,
    )


class RunningServer:
    def __init__(self, runner: web.AppRunner, url: str, app: web.Application) -> None:
        self.runner = runner
        self.url = url
        self.app = app


class ServerStarter:
    """Starts real memoryd apps on 127.0.0.1:<random port>; each is stopped at the end of
    the run, or earlier by `stop_on` when the database it uses is about to be dropped."""

    def __init__(self, base: Settings) -> None:
        self.base = base
        self.running: list[RunningServer] = []

    async def __call__(self, **overrides: Any) -> RunningServer:
        app = create_app(self.base.replace(**overrides))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server = RunningServer(runner, f"http://127.0.0.1:{port}", app)
        self.running.append(server)
        return server

    async def stop_on(self, database_url: str) -> None:
        """Stop the servers on ``database_url`` (their pools and job runners with them)."""
        for server in [s for s in self.running if s.app[SETTINGS].database_url == database_url]:
            self.running.remove(server)
            await stop_app(server.runner)

    async def stop_all(self) -> None:
        while self.running:
            await stop_app(self.running.pop().runner)


StartServer = ServerStarter


@pytest_asyncio.fixture(scope="session")
async def start_server(base_settings: Settings) -> AsyncIterator[StartServer]:
    """Start a real memoryd app on 127.0.0.1:<random port>; stopped at the end of the run."""
    starter = ServerStarter(base_settings)
    yield starter
    await starter.stop_all()


@pytest_asyncio.fixture(scope="module")
async def own_database(admin_dsn: str, start_server: StartServer) -> AsyncIterator[str]:
    """A migrated database of this module's own: only its own servers run the jobs queued
    there (a shared server would otherwise take them, with its own embedder or
    recognizer). Its servers are stopped before it is dropped."""
    name = f"memoryd_own_{uuid.uuid4().hex[:10]}"
    await create_database_if_missing(admin_dsn, name)
    dsn = _dsn_with_database(admin_dsn, name)
    await migrate(dsn)
    yield dsn
    await start_server.stop_on(dsn)
    await drop_database(admin_dsn, name)


@pytest_asyncio.fixture(scope="session")
async def server(start_server: StartServer) -> RunningServer:
    """The shared server most tests use (rate limits off)."""
    return await start_server()


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, server.url)
