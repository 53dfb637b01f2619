"""memoryd-client.js, run in chromium against a real server: protocol v1 conformance.

The page is the server's own origin with its CSP; the SDK is imported from
/memoryd-client.js as the app imports it. Requests, errors, events (once each, in seq
order, acknowledged), signals, resume after a dropped socket, refresh of a token.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from memoryd.server.keys import SERVICES
from tests.web.conftest import WebServer, wait_js

# A page-side harness: one client per page, its events and signals kept for the test.
HARNESS = """
async ([accessToken, refreshToken, options]) => {
  const sdk = await import("/memoryd-client.js");
  const client = new sdk.MemorydClient({ accessToken, refreshToken, ...options });
  window.sdk = sdk;
  window.client = client;
  window.events = [];
  window.signals = [];
  window.states = [];
  client.on("event", (e) => { window.events.push(e); });
  client.on("signal", (s) => { window.signals.push(s); });
  client.on("state", (s) => { window.states.push(s); });
  const welcome = await client.connect();
  return welcome;
}
"""


async def _open(context: Any, server: WebServer, user: Any, **options: Any) -> tuple[Any, dict]:
    page = await context.new_page()
    await page.goto(server.url + "/memoryd-client.d.ts")  # any page of the origin
    welcome = await page.evaluate(HARNESS, [user.token, user.refresh_token, options])
    return page, welcome


async def test_requests_events_acks_and_errors(context: Any, web_server: WebServer) -> None:
    user = await web_server.user()
    page, welcome = await _open(context, web_server, user)
    assert welcome["userId"] == user.user["id"]
    assert welcome["limits"]["maxFrameBytes"] > 0

    pong = await page.evaluate("client.request('ping')")
    assert pong["pong"] is True

    memory = await page.evaluate("client.request('memory.create', {title: 'Trip'})")
    assert memory["title"] == "Trip"
    sent = await page.evaluate(
        "([m]) => Promise.all([1, 2, 3].map((i) => client.sendMessage(m, 'note ' + i)))",
        [memory["id"]],
    )
    assert [m["seq"] for m in sent] == [1, 2, 3]  # pipelined, answered in order

    # Errors reject with the server's code, message and details, and the socket stays up.
    error = await page.evaluate(
        """client.request('memory.create', {title: 5}).then(
             () => null, (e) => ({name: e.name, code: e.code, details: e.details}))"""
    )
    assert error["name"] == "MemorydError"
    assert error["code"] == "validation_failed"
    assert error["details"][0]["field"] == "title"
    missing = await page.evaluate(
        f"client.request('memory.get', {{memoryId: '{uuid.uuid4()}'}}).catch((e) => e.code)"
    )
    assert missing == "not_found"

    # Its own writes come back as events, once each, in seq order.
    events = await wait_js(page, "window.events.length >= 4 && window.events")
    assert [e["event"] for e in events] == ["memory.created"] + ["message.created"] * 3
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    # A duplicate frame (the server never sends one, the client must not care) is dropped.
    await page.evaluate(
        "([e]) => client._onFrame({type: 'event', seq: e.seq, event: e.event, data: e.data})",
        [events[-1]],
    )
    await page.wait_for_timeout(100)
    assert await page.evaluate("window.events.length") == 4

    # Acked: after closing (acks are flushed), the device row holds the last seq.
    device = await page.evaluate("client.deviceId")
    await page.evaluate("client.close()")
    for _ in range(50):
        acked = await web_server.db.fetchval(
            "SELECT acked_seq FROM devices WHERE id = $1", uuid.UUID(device)
        )
        if acked == seqs[-1]:
            break
        await asyncio.sleep(0.1)
    assert acked == seqs[-1]
    assert await page.evaluate("client.state") == "closed"


async def test_resume_after_a_drop_is_exactly_once_in_order(
    context: Any, web_server: WebServer
) -> None:
    user = await web_server.user()
    page, _ = await _open(context, web_server, user)
    memory = await user.post("/api/memories", json={"title": "Resume"})
    memory_id = memory.body["memory"]["id"]
    await wait_js(page, "window.events.length >= 1")

    for round_ in range(3):
        # The socket drops; another device writes meanwhile; the page reconnects on its own.
        await page.evaluate("client.drop()")
        for i in range(4):
            resp = await user.post(
                f"/api/memories/{memory_id}/messages", json={"content": f"r{round_}-{i}"}
            )
            assert resp.status == 201, resp.body
        await wait_js(page, f"window.events.length >= {1 + 4 * (round_ + 1)}")

    await page.wait_for_timeout(200)  # nothing more must come
    events = await page.evaluate("window.events")
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    contents = [e["data"]["content"] for e in events[1:]]
    assert contents == [f"r{r}-{i}" for r in range(3) for i in range(4)]
    states = await page.evaluate("window.states")
    assert states.count("reconnecting") >= 3
    assert await page.evaluate("client.connections") == 4


async def test_resume_from_a_given_last_seq_and_signals(
    browser: Any, web_server: WebServer
) -> None:
    user = await web_server.user()
    memory = await user.post("/api/memories", json={"title": "Signals"})
    memory_id = memory.body["memory"]["id"]
    for i in range(3):
        await user.post(f"/api/memories/{memory_id}/messages", json={"content": f"m{i}"})
    one = await browser.new_context()
    two = await browser.new_context()
    try:
        # lastSeq 1 (the memory.created): the three messages are replayed, nothing else.
        page, welcome = await _open(one, web_server, user, lastSeq=1)
        assert welcome["headSeq"] == 4
        events = await wait_js(page, "window.events.length >= 3 && window.events")
        assert [e["seq"] for e in events] == [2, 3, 4]
        # No lastSeq: no local state, so the client starts at the head and says "resync".
        other, _ = await _open(two, web_server, user)
        assert await other.evaluate("client.lastSeq") == 4
        # Typing on one device is a signal on the other.
        await other.evaluate(f"client.typing('{memory_id}')")
        signal = await wait_js(page, "window.signals.find((s) => s.signal === 'typing')")
        assert signal["data"]["memoryId"] == memory_id
    finally:
        await one.close()
        await two.close()


async def test_an_expiring_token_is_refreshed_in_band(context: Any, start_web: Any) -> None:
    server = await start_web(access_token_ttl=6)
    user = await server.user()
    page, _ = await _open(context, server, user)
    first = await page.evaluate("client.accessToken")
    # The token lives 6 s: the client refreshes it (REST) a quarter of its life before
    # the end and hands it to the socket (auth.refresh), so the socket is never closed
    # with 4001.
    await page.wait_for_timeout(7_500)
    assert await page.evaluate("client.accessToken") != first
    assert await page.evaluate("client.connections") == 1
    assert (await page.evaluate("client.request('ping')"))["pong"] is True
    # A token that expired while the page slept: the socket closes with 4001 at expiry,
    # and the client refreshes through REST, then reconnects.
    await page.evaluate("clearTimeout(client._refreshTimer)")
    await wait_js(page, "client.connections >= 2 && client.state === 'connected'", 20)
    assert await page.evaluate("client.closeCode") == 4001
    assert (await page.evaluate("client.request('ping')"))["pong"] is True


async def test_a_restart_1012_is_survived_and_resumed(context: Any, start_web: Any) -> None:
    first = await start_web()
    user = await first.user()
    memory = await user.post("/api/memories", json={"title": "Restart"})
    memory_id = memory.body["memory"]["id"]
    page, _ = await _open(context, first, user)
    await page.evaluate(
        """() => {
          window.closes = [];
          client.on('state', (s) => s === 'reconnecting' && closes.push(client.closeCode));
        }"""
    )
    pending = page.evaluate(  # answered by the next server, after the restart
        "([m]) => new Promise((r) => setTimeout(r, 300)).then("
        "  () => client.sendMessage(m, 'sent during the restart'))",
        [memory_id],
    )
    await first.stop()  # SIGTERM: drain, close 1012
    second = await start_web(database=first.database, port=first.port)
    rest = second.api.as_user(user.token)
    for i in range(3):
        resp = await rest.post(f"/api/memories/{memory_id}/messages", json={"content": f"n{i}"})
        assert resp.status == 201, resp.body
    sent = await pending
    assert sent["content"] == "sent during the restart"
    # (The memory was created before the page connected: its state, not an event.)
    await wait_js(page, "window.events.length >= 4")
    await page.wait_for_timeout(200)
    events = await page.evaluate("window.events")
    seqs = [e["seq"] for e in events]
    assert seqs == [2, 3, 4, 5], seqs
    assert sorted(e["data"]["content"] for e in events) == sorted(
        ["n0", "n1", "n2", "sent during the restart"]
    )
    # The server closes with 1012 ("restarting"). In a loaded full run the browser has
    # sometimes seen the transport end first (1006); either way the SDK must reconnect and
    # resume, which the assertions above prove. (Known flake, noted for a follow-up.)
    closes = await page.evaluate("window.closes")
    assert closes and set(closes) <= {1012, 1006}, closes


async def test_rate_limited_requests_are_waited_out(context: Any, start_web: Any) -> None:
    server = await start_web(ws_requests_per_second=5.0, ws_request_burst=5)
    user = await server.user()
    page, _ = await _open(context, server, user)
    # Nine at once: five pass, four are refused with retryAfter and sent again, spaced
    # at the server's rate (four refusals stay under the 4008 threshold of five).
    started = await page.evaluate("performance.now()")
    answers = await page.evaluate("Promise.all([...Array(9)].map(() => client.request('ping')))")
    elapsed = await page.evaluate("performance.now()") - started
    assert all(a["pong"] for a in answers)
    assert elapsed >= 500  # the four waited for tokens
    assert await page.evaluate("client.connections") == 1


async def test_rest_calls_refresh_an_expired_token(context: Any, web_server: WebServer) -> None:
    user = await web_server.user()
    page, _ = await _open(context, web_server, user)
    services = web_server.app[SERVICES]
    record = await services.store.users.get(uuid.UUID(user.user["id"]))
    assert record is not None
    expired = services.tokens.issue_access(record, now=datetime.now(UTC) - timedelta(hours=1))
    # A device clock two hours slow: the client takes the token for a fresh one, sends
    # it, gets 401 token_expired, refreshes and calls again.
    me = await page.evaluate(
        """async ([t]) => {
          client.accessToken = t;
          const realNow = Date.now;
          Date.now = () => realNow() - 2 * 3600 * 1000;
          try { return await client.api('/api/users/me'); } finally { Date.now = realNow; }
        }""",
        [expired],
    )
    assert me["user"]["id"] == user.user["id"]
    assert await page.evaluate("client.accessToken") != expired
    error = await page.evaluate(
        "client.api('/api/memories/not-a-uuid').catch((e) => ({code: e.code, status: e.status}))"
    )
    assert error["status"] in (400, 404)
