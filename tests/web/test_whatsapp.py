"""A WhatsApp thread in the browser: the contact's name and each message's delivery state.

The server is WhatsApp-enabled against the local Graph API fake (tests/fakes/whatsapp.py)
and receives webhooks signed as Meta signs them; the page shows what the bridge stores.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tests.fakes.whatsapp import FakeGraph, WebhookDriver
from tests.helpers import PASSWORD
from tests.web.conftest import StartWeb, screenshot

APP_SECRET = "app-secret-" + uuid.uuid4().hex


@pytest_asyncio.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    fake = await FakeGraph().start()
    yield fake
    await fake.stop()


async def test_whatsapp_thread_shows_contact_and_delivery(
    browser: Any, start_web: StartWeb, graph: FakeGraph, http: Any
) -> None:
    server = await start_web(
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token="verify-" + uuid.uuid4().hex[:8],
        whatsapp_graph_url=graph.api_url,
    )
    user = await server.user(premium=True)
    number = graph.add_number()
    resp = await user.post(
        "/api/sync/whatsapp/connect",
        json={"phoneNumber": number, "businessAccountId": "102290129340398",
              "accessToken": graph.token},
    )  # fmt: skip
    assert resp.status == 200, resp.body
    driver = WebhookDriver(http, server.url, APP_SECRET)
    contact = "1555" + str(uuid.uuid4().int)[:7]
    posted = await driver.post(
        driver.text(number, wa_id=contact, name="Grace Hopper", body="Are we still on?")
    )
    assert posted.status == 200, posted.text

    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="UTC"
    )
    try:
        page = await context.new_page()
        await page.goto(server.url + "/")
        form = page.get_by_role("form", name="Sign in")
        await form.get_by_label("Email").fill(user.email)  # type: ignore[attr-defined]
        await form.get_by_label("Password").fill(PASSWORD)
        await form.get_by_role("button", name="Sign in").click()
        item = page.locator("#memory-list button", has_text="Grace Hopper")
        await item.locator(".tag-wa", has_text="WhatsApp").wait_for()
        await item.click()
        await page.locator("#thread-subtitle", has_text=f"Grace Hopper (+{contact})").wait_for()
        # Text only to WhatsApp: no attach or record buttons in its thread.
        assert await page.get_by_role("button", name="Attach a file").is_hidden()
        assert await page.get_by_role("button", name="Record a voice message").is_hidden()
        inbound = page.locator("#messages li.contact[data-seq]", has_text="Are we still on?")
        await inbound.locator(".author", has_text="Grace Hopper").wait_for()

        # A reply goes out through the Graph API: pending, then sent with its wamid.
        await page.get_by_label("Message", exact=True).fill("Yes, 7 pm at the usual place")
        await page.get_by_role("button", name="Send").click()
        mine = page.locator("#messages li.mine[data-seq]", has_text="7 pm")
        await mine.and_(page.locator("[data-status=sent]")).wait_for()
        assert await mine.locator(".status").inner_text() == "Sent"
        [sent] = graph.sent_to(number)
        for status in ("delivered", "read"):
            posted = await driver.post(
                driver.status(number, wamid=sent.wamid, status=status, recipient_id=contact)
            )
            assert posted.status == 200, posted.text
            await mine.and_(page.locator(f"[data-status={status}]")).wait_for()
        assert await mine.locator(".status").inner_text() == "Read"
        await screenshot(page, "whatsapp-desktop")
    finally:
        await context.close()
