"""The chat app at /, in chromium: what a person sees and does, on real servers.

Each browser context is one device (its own storage). Pages keep the app's strict CSP:
a violation (an inline script or style) would be a console error, and every test fails
on console errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

from tests.fakes.openai import FakeOpenAI, Step
from tests.helpers import PASSWORD, Api
from tests.web.conftest import PHONE, WebServer, wait_js


async def test_register_then_two_devices_see_each_other_live(
    devices: Any, web_server: WebServer
) -> None:
    one = await devices()
    page = one.page
    response = await page.goto(web_server.url + "/")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    await page.get_by_role("heading", name="Sign in").wait_for()
    await one.screenshot("sign-in")

    # Register through the form; a weak password is refused in words first.
    await page.get_by_role("button", name="Create an account").click()
    form = page.get_by_role("form", name="Create an account")
    await form.get_by_label("First name").fill("Ada")
    await form.get_by_label("Last name").fill("Lovelace")
    email = f"ada-{uuid.uuid4().hex[:12]}@example.com"
    await form.get_by_label("Email").fill(email)
    await form.get_by_label("Password").fill("short")
    await form.get_by_role("button", name="Create account").click()
    await page.locator("#register-error", has_text="Password").wait_for()
    await form.get_by_label("Password").fill(PASSWORD)
    await form.get_by_role("button", name="Create account").click()
    await one.connected()

    await page.get_by_label("Title of a new memory").fill("Trip to Lisbon")
    await page.get_by_role("button", name="Add").click()
    await page.locator("#thread-title", has_text="Trip to Lisbon").wait_for()
    await page.get_by_label("Title of a new memory").fill("Groceries")
    await page.get_by_role("button", name="Add").click()
    await page.locator("#thread-title", has_text="Groceries").wait_for()
    await one.open_memory("Trip to Lisbon")
    await one.send("Where was that bakery?")
    await one.stored("Where was that bakery?").wait_for()

    # The second device signs in with the same account and sees the thread.
    two = await devices()
    user = Api(None, web_server.url)  # type: ignore[arg-type]
    user.email = email  # type: ignore[attr-defined]
    await two.sign_in(web_server, user)
    await two.open_memory("Trip to Lisbon")
    await two.stored("Where was that bakery?").wait_for()

    # Each sees the other's message live, and the other's typing.
    await two.page.get_by_label("Message", exact=True).press_sequentially("Bel")
    await page.locator("#typing", has_text="Typing").wait_for()
    await two.send("Belém, near the monastery")
    await one.stored("Belém, near the monastery").wait_for()
    await one.send("Pastéis de nata!")
    await two.stored("Pastéis de nata!").wait_for()
    assert await one.bodies() == await two.bodies()

    # Read markers (one per user, shared by the devices): a message that arrives while no
    # device shows its thread is unread on both; reading it on one clears it on the other.
    await one.open_memory("Groceries")
    await two.open_memory("Groceries")
    login = await web_server.api.post(
        "/api/auth/login", json={"email": email, "password": PASSWORD}
    )
    rest = web_server.api.as_user(login.body["accessToken"])
    listed = await rest.get("/api/memories", params={"search": "Lisbon"})
    trip = listed.body["memories"][0]["id"]
    sent = await rest.post(f"/api/memories/{trip}/messages", json={"content": "And the tram 28"})
    assert sent.status == 201, sent.body
    item = "#memory-list button"
    badge = page.locator(item, has_text="Trip to Lisbon").locator(".badge")
    other_badge = two.page.locator(item, has_text="Trip to Lisbon").locator(".badge")
    await badge.filter(has_text="1").wait_for()
    await other_badge.filter(has_text="1").wait_for()
    await one.screenshot("memories-desktop")
    await one.open_memory("Trip to Lisbon")
    await badge.wait_for(state="detached")
    await other_badge.wait_for(state="detached")
    await one.stored("And the tram 28").wait_for()
    assert await one.bodies() == [
        "Where was that bakery?",
        "Belém, near the monastery",
        "Pastéis de nata!",
        "And the tram 28",
    ]
    await one.screenshot("thread-desktop")

    # Favourites: the star follows on the other device, and the filter shows only it.
    await two.open_memory("Trip to Lisbon")
    await two.page.get_by_role("button", name="☆ Favourite", exact=True).click()
    await page.get_by_role("button", name="★ Favourite", exact=True).wait_for()
    await page.get_by_role("button", name="★ Favourites").click()
    await page.locator("#memory-list button", has_text="Groceries").wait_for(state="detached")
    await page.locator("#memory-list button", has_text="Trip to Lisbon").wait_for()


async def test_offline_then_back_has_everything_once_in_order(
    devices: Any, web_server: WebServer
) -> None:
    user = await web_server.user()
    memory = await user.post("/api/memories", json={"title": "Commute"})
    messages = f"/api/memories/{memory.body['memory']['id']}/messages"
    await user.post(messages, json={"content": "before 0"})
    one = await devices()
    await one.sign_in(web_server, user)
    await one.open_memory("Commute")
    await one.stored("before 0").wait_for()

    # The network goes. The open socket carries nothing any more: the client notices
    # (the browser's "offline" event, then a ping that gets no answer), says so, and
    # keeps what is typed.
    await one.page.context.set_offline(True)
    status = one.page.get_by_role("status")
    await status.filter(has_text="Offline").wait_for()
    await one.send("typed while offline")
    unsent = one.page.locator("li[data-state=sending]", has_text="Waiting for the connection")
    await unsent.wait_for()
    # Another device writes meanwhile.
    for i in range(5):
        resp = await user.post(messages, json={"content": f"meanwhile {i}"})
        assert resp.status == 201, resp.body
    await one.screenshot("offline-desktop")

    await one.page.context.set_offline(False)
    await one.connected()
    await one.stored("typed while offline").wait_for()
    await one.stored("meanwhile 4").wait_for()
    await asyncio.sleep(0.3)  # nothing more must arrive
    bodies = await one.bodies()
    assert bodies[:6] == ["before 0", *(f"meanwhile {i}" for i in range(5))]
    assert bodies.count("typed while offline") == 1
    assert len(bodies) == 7
    assert await one.page.locator("li[data-state]").count() == 0  # no optimistic copy left

    # Reconnecting (not offline): a dropped socket with the network up.
    await one.page.evaluate("memorydApp.client.drop()")
    with contextlib.suppress(Exception):  # it may reconnect before we look
        await status.filter(has_text="Reconnecting").wait_for(timeout=2_000)
    await one.connected()
    states = await one.page.evaluate("memorydApp.client.connections")
    assert states >= 3


async def test_memo_streams_then_stores_its_reply(devices: Any, web_server: WebServer) -> None:
    user = await web_server.user(premium=True)
    await user.post(
        "/api/memories",
        json={"title": "Lisbon notes", "content": {"text": "The bakery was in Belém."}},
    )
    one = await devices()
    await one.sign_in(web_server, user)
    await one.open_memory("Lisbon notes")
    # Watch the thread: every text the streaming bubble shows.
    await one.page.evaluate(
        """() => {
          window.streamed = [];
          new MutationObserver(() => {
            const el = document.querySelector('#messages li.streaming .body');
            const text = el && el.textContent;
            if (text && window.streamed.at(-1) !== text) window.streamed.push(text);
          }).observe(document.getElementById('messages'), {childList: true, subtree: true});
        }"""
    )
    await one.page.get_by_label("Ask Memo").check()
    await one.send("Where was the bakery?")
    memo = one.page.locator("#messages li.memo[data-seq]")
    await memo.wait_for()
    assert await one.page.locator("#messages li.streaming").count() == 0
    streamed = await one.page.evaluate("window.streamed")
    assert len(streamed) >= 2, streamed  # it grew token by token before it was stored
    assert all(b.startswith(a) for a, b in itertools.pairwise(streamed))
    final = await memo.locator(".body").inner_text()
    assert final.startswith(streamed[-1].strip()[:20])
    assert "Belém" in final
    await memo.locator(".author", has_text="Memo").wait_for()
    await one.screenshot("memo-desktop")


async def test_an_expired_token_is_refreshed_unnoticed(devices: Any, start_web: Any) -> None:
    server = await start_web(access_token_ttl=3)
    user = await server.user()
    await user.post("/api/memories", json={"title": "Short tokens"})
    one = await devices()
    await one.sign_in(server, user)
    first = await one.page.evaluate("memorydApp.client.accessToken")
    await one.open_memory("Short tokens")
    for i in range(3):  # several token lifetimes; the page keeps working throughout
        await asyncio.sleep(2.5)
        await one.send(f"still here {i}")
        await one.stored(f"still here {i}").wait_for()
    assert await one.page.evaluate("memorydApp.client.accessToken") != first
    # REST too (the search goes over REST with the current token).
    await one.page.get_by_label("Search memories").fill("Short")
    await one.page.locator("#list-status", has_text="1 found").wait_for()
    await wait_js(one.page, "document.getElementById('connection').dataset.state === 'connected'")
    assert await one.page.locator("#alert").is_hidden()


async def test_search_finds_what_was_said_in_a_thread(devices: Any, web_server: WebServer) -> None:
    user = await web_server.user()
    trip = await user.post("/api/memories", json={"title": "Lisbon trip"})
    trip_id = trip.body["memory"]["id"]
    said = await user.post(
        f"/api/memories/{trip_id}/messages",
        json={"content": "we rode tram 28 up to the castle & back"},
    )
    await user.post("/api/memories", json={"title": "Groceries"})
    one = await devices()
    await one.sign_in(web_server, user)
    await one.page.get_by_label("Search memories").fill("castle")
    await one.page.locator("#list-status", has_text="1 found").wait_for()
    items = one.page.locator(".memory-item")
    assert await items.count() == 1
    assert "Lisbon trip" in await items.first.inner_text()
    snippet = one.page.locator(".memory-snippet")
    assert await snippet.get_attribute("data-message-id") == said.body["message"]["id"]
    assert await snippet.locator("mark").inner_text() == "castle"
    assert "& back" in await snippet.inner_text()  # escaped text comes back as text


async def test_phone_layout(devices: Any, web_server: WebServer) -> None:
    user = await web_server.user()
    memory = await user.post("/api/memories", json={"title": "On the go"})
    await user.post(
        f"/api/memories/{memory.body['memory']['id']}/messages", json={"content": "From my phone"}
    )
    phone = await devices()
    await phone.page.set_viewport_size(PHONE)
    await phone.page.goto(server_url := web_server.url + "/")
    await phone.screenshot("sign-in-phone")
    await phone.sign_in(web_server, user)
    assert server_url
    thread = phone.page.locator("#thread")
    assert await thread.is_hidden()  # one pane at a time: the list first
    await phone.screenshot("memories-phone")
    await phone.open_memory("On the go")
    assert await phone.page.locator("#sidebar").is_hidden()
    await phone.stored("From my phone").wait_for()
    await phone.screenshot("thread-phone")
    await phone.page.get_by_role("button", name="Back to the list").click()
    await phone.page.locator("#sidebar").wait_for()
    focused = await phone.page.evaluate("document.activeElement.dataset.memoryId")
    assert focused == memory.body["memory"]["id"]  # the keyboard goes on from there


async def test_memo_can_be_stopped_mid_reply(devices: Any, start_web: Any) -> None:
    fake = await FakeOpenAI().start()
    try:
        server = await start_web(openai_base_url=fake.url + "/v1", openai_api_key="test")
        step = Step(hold_after=2)  # two pieces, then the model "thinks" until released
        fake.then(step)
        user = await server.user(premium=True)
        await user.post("/api/memories", json={"title": "Long answer"})
        one = await devices()
        await one.sign_in(server, user)
        await one.open_memory("Long answer")
        await one.page.get_by_label("Ask Memo").check()
        await one.send("Tell me everything")
        streaming = one.page.locator("#messages li.streaming")
        await streaming.locator(".body", has_text="Memo here: the b").wait_for()
        await streaming.get_by_role("button", name="Stop").click()
        memo = one.page.locator("#messages li.memo[data-status=cancelled]")
        await memo.wait_for()
        assert await memo.locator(".body").inner_text() == "Memo here: the b"
        assert await memo.locator(".status").inner_text() == "Stopped"
        assert await streaming.count() == 0
        step.release.set()
    finally:
        await fake.stop()


async def test_history_pages_back_and_the_keyboard_sends(
    devices: Any, web_server: WebServer
) -> None:
    user = await web_server.user()
    memory = await user.post("/api/memories", json={"title": "Long thread"})
    messages = f"/api/memories/{memory.body['memory']['id']}/messages"
    for i in range(35):
        resp = await user.post(messages, json={"content": f"line {i:02}"})
        assert resp.status == 201, resp.body
    one = await devices()
    await one.sign_in(web_server, user)
    await one.open_memory("Long thread")
    await one.stored("line 34").wait_for()
    assert await one.bodies() == [f"line {i:02}" for i in range(5, 35)]  # the newest 30
    older = one.page.get_by_role("button", name="Load older messages")
    await older.click()
    await one.stored("line 00").wait_for()
    assert await one.bodies() == [f"line {i:02}" for i in range(35)]
    await older.wait_for(state="hidden")  # nothing older is left
    # Enter sends (Shift+Enter would be a new line); the field is then empty again.
    box = one.page.get_by_label("Message", exact=True)
    await box.focus()
    await one.page.keyboard.type("typed and sent with Enter")
    await one.page.keyboard.press("Enter")
    await one.stored("typed and sent with Enter").wait_for()
    assert await box.input_value() == ""


async def test_errors_are_shown_in_words(devices: Any, web_server: WebServer) -> None:
    user = await web_server.user()
    one = await devices()
    await one.page.goto(web_server.url + "/")
    form = one.page.get_by_role("form", name="Sign in")
    await form.get_by_label("Email").fill(user.email)  # type: ignore[attr-defined]
    await form.get_by_label("Password").fill("Wr0ng-password!")
    await form.get_by_role("button", name="Sign in").click()
    await (
        form.get_by_role("alert")
        .filter(has_text="That email and password do not match an account.")
        .wait_for()
    )

    # Signed out elsewhere ("log out of every device"): the next refresh is refused, and
    # the page goes back to the sign-in form saying why.
    await one.sign_in(web_server, user)
    out = await user.post("/api/auth/logout", json={"allDevices": True})
    assert out.status == 204, out.body
    await one.page.evaluate("memorydApp.client.refreshNow().catch(() => {})")
    await form.get_by_role("alert").filter(has_text="Your session has ended").wait_for()
    assert await one.page.evaluate("localStorage.getItem('memoryd.session')") is None
