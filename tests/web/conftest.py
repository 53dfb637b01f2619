"""Browser tests: Debian's chromium driven by Playwright, against real memoryd servers.

* ``browser``: one headless chromium per run (``/usr/lib/chromium/chromium``; the
  /usr/bin wrapper is a shell script). Missing, it fails the tests under CI (``CI=true``)
  and skips them elsewhere, with the reason. Playwright's wheel brings its own driver:
  nothing is downloaded.
* ``context``: a fresh browser context per test (its own storage: one "device").
* ``devices``: ``await devices()`` opens one more "device" (a browser context in a fixed
  locale and time zone, with the app's page); every test fails on a console error.
* Screenshots go to ``MEMORYD_SCREENSHOTS`` (``make screenshots`` sets docs/screenshots,
  the README's) and otherwise to a temporary directory: ``make test`` leaves the tree
  clean, and every run still takes them (a screen that cannot be drawn fails).
* ``start_web``: memoryd servers on databases of their own, so that Memo's reply jobs
  run on that server (every app's job runner takes the jobs of its database) and reach
  its sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from memoryd.config import Settings
from memoryd.server.app import create_app
from memoryd.server.keys import SERVICES
from memoryd.storage.database import Database, create_database_if_missing, drop_database
from memoryd.storage.migrate import migrate
from tests.helpers import PASSWORD, Api, promote

CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / (
    os.environ.get("MEMORYD_SCREENSHOTS") or Path(tempfile.gettempdir()) / "memoryd-screenshots"
)  # an absolute value stays as it is


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def unavailable(reason: str) -> None:
    """A missing browser: a failure under CI, a skip (with the reason) elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must not be skipped)")
    pytest.skip(reason)


async def wait_js(page: Any, expression: str, timeout: float = 15.0) -> Any:
    """Poll a JavaScript expression until it is truthy; its value.

    Not ``page.wait_for_function``: that evaluates strings with eval, which the pages'
    Content-Security-Policy (rightly) forbids. ``page.evaluate`` goes through the
    DevTools protocol, which CSP does not govern.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(f"() => ({expression})")
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


class Device:
    """One browser context with the app open, its console watched."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        # A refused request (the weak password) or a socket that cannot connect is logged
        # by chromium; the app shows them in words, which the tests check. Anything else
        # (a CSP violation above all) fails the test.
        expected = ("Failed to load resource", "WebSocket connection to")  # and while offline
        if message.type == "error" and not message.text.startswith(expected):
            self.errors.append(message.text)

    async def sign_in(self, server: WebServer, user: Api) -> None:
        await self.page.goto(server.url + "/")
        form = self.page.get_by_role("form", name="Sign in")
        await form.get_by_label("Email").fill(user.email)  # type: ignore[attr-defined]
        await form.get_by_label("Password").fill(PASSWORD)
        await form.get_by_role("button", name="Sign in").click()
        await self.connected()

    async def connected(self) -> None:
        await self.page.get_by_role("status").filter(has_text="Connected").wait_for()

    async def open_memory(self, title: str) -> None:
        await self.page.locator("#memory-list button", has_text=title).click()
        await self.page.locator("#thread-title", has_text=title).wait_for()

    async def send(self, text: str) -> None:
        await self.page.get_by_label("Message", exact=True).fill(text)
        await self.page.get_by_role("button", name="Send").click()

    def stored(self, text: str) -> Any:
        """A message as stored by the server (it has a seq), not an optimistic copy."""
        return self.page.locator("#messages li[data-seq]", has_text=text)

    async def bodies(self) -> list[str]:
        return await self.page.locator("#messages li[data-seq] .body").all_inner_texts()

    async def screenshot(self, name: str) -> None:
        await screenshot(self.page, name)


Devices = Callable[..., Awaitable[Device]]


@contextlib.asynccontextmanager
async def open_devices(browser: Any) -> AsyncIterator[Devices]:
    """``await devices(**context_options)``: one more device; console errors fail at the end."""
    contexts: list[Any] = []
    made: list[Device] = []

    async def device(**options: Any) -> Device:
        ctx = await browser.new_context(
            viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="UTC", **options
        )
        contexts.append(ctx)
        made.append(Device(await ctx.new_page()))
        return made[-1]

    yield device
    for ctx in contexts:
        await ctx.close()
    for d in made:
        assert not d.errors, f"console errors: {d.errors}"


@pytest_asyncio.fixture
async def devices(browser: Any) -> AsyncIterator[Devices]:
    async with open_devices(browser) as device:
        yield device


@pytest_asyncio.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    await ctx.close()


@dataclass
class WebServer:
    url: str
    app: web.Application
    api: Api  # anonymous
    runner: web.AppRunner
    database: str  # its own database's name

    @property
    def db(self) -> Database:
        return self.app[SERVICES].store.db

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def user(self, *, premium: bool = False) -> Api:
        user = await self.api.register(firstName="Ada", lastName="Lovelace")
        return await promote(user, self.db) if premium else user

    async def stop(self) -> None:
        """Shut down as on SIGTERM: sockets drain and close with 1012."""
        await self.runner.cleanup()


StartWeb = Callable[..., Awaitable[WebServer]]


@pytest_asyncio.fixture(scope="session")
async def start_web(
    admin_dsn: str, base_settings: Settings, http: aiohttp.ClientSession
) -> AsyncIterator[StartWeb]:
    """``start_web(**settings)``: a server on a new database; ``database=``/``port=`` start
    one on another server's database and port (a restart)."""
    runners: list[web.AppRunner] = []
    databases: list[str] = []

    async def start(*, database: str | None = None, port: int = 0, **overrides: Any) -> WebServer:
        name = database or f"memoryd_web_{uuid.uuid4().hex[:12]}"
        dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
        if database is None:
            await create_database_if_missing(admin_dsn, name)
            await migrate(dsn)
            databases.append(name)
        app = create_app(base_settings.replace(database_url=dsn, **overrides))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        runners.append(runner)
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return WebServer(url, app, Api(http, url), runner, name)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()  # a no-op for one already stopped
    for name in databases:
        await drop_database(admin_dsn, name)


@pytest_asyncio.fixture(scope="session")
async def web_server(start_web: StartWeb) -> WebServer:
    """The shared server of the browser tests (the local responder answers for Memo)."""
    return await start_web()
