"""WhatsApp bridge against a local Graph API and webhooks signed exactly as Meta signs them.

Each test runs its own WhatsApp-enabled server(s) and stops them at its end: only servers
configured for WhatsApp run its jobs, so a test's jobs are handled by that test's nodes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from memoryd.client import Client, ClientEvent, connect
from memoryd.config import Settings
from memoryd.crypto import SecretBox
from memoryd.handlers import files
from memoryd.handlers.whatsapp import INBOUND, OUTBOUND, token_aad
from memoryd.server.app import create_app
from memoryd.server.keys import JOBS, SERVICES
from memoryd.storage.database import Database
from memoryd.storage.jobs import Job, JobStore
from tests.conftest import RunningServer
from tests.fakes.whatsapp import FakeGraph, WebhookDriver, meta_json, sign
from tests.helpers import Api, Response, promote, stop_app
from tests.test_openapi import Contract

pytestmark = pytest.mark.storage

APP_SECRET = "app-secret-" + uuid.uuid4().hex
VERIFY_TOKEN = "verify-" + uuid.uuid4().hex[:12]
T = TypeVar("T")


# -- fixtures and helpers -------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def graph() -> AsyncIterator[FakeGraph]:
    fake = await FakeGraph().start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=4)
    yield database
    await database.close()


@asynccontextmanager
async def whatsapp_node(
    base: Settings, graph: FakeGraph, *, run_jobs: bool = True, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A WhatsApp-enabled node on a random port, stopped (jobs too) when the block ends."""
    settings = base.replace(
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_graph_url=graph.api_url,
        **overrides,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bridge = app[SERVICES].whatsapp
        assert bridge is not None
        bridge.retry_base = 0.05  # retries in tens of milliseconds, not seconds
        if not run_jobs:
            await app[JOBS].stop()
        yield RunningServer(runner, f"http://127.0.0.1:{runner.addresses[0][1]}", app)
    finally:
        await stop_app(runner)


@pytest_asyncio.fixture
async def node(base_settings: Settings, graph: FakeGraph) -> AsyncIterator[RunningServer]:
    async with whatsapp_node(base_settings, graph) as running:
        yield running


@pytest.fixture
def api(node: RunningServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, node.url)


@pytest.fixture
def driver(node: RunningServer, http: aiohttp.ClientSession) -> WebhookDriver:
    return WebhookDriver(http, node.url, APP_SECRET)


@pytest_asyncio.fixture
async def contract(api: Api) -> Contract:
    resp = await api.get("/api/openapi.json")
    return Contract(resp.body)


def ws_url(server: RunningServer) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def next_event(device: Client, name: str, timeout: float = 10.0) -> ClientEvent:
    """The next event called ``name``, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        event = await device.next_event(timeout=max(0.01, deadline - time.monotonic()))
        if event.event == name:
            return event


async def connected_user(api: Api, db: Database, graph: FakeGraph) -> tuple[Api, str]:
    user = await promote(await api.register(), db)
    number = graph.add_number()
    resp = await user.post(
        "/api/sync/whatsapp/connect",
        json={"phoneNumber": number, "businessAccountId": "102290129340398",
              "accessToken": graph.token},
    )  # fmt: skip
    assert resp.status == 200, resp.body
    return user, number


def wa_id() -> str:
    return "1555" + str(uuid.uuid4().int)[:7]


async def inbound_jobs(db: Database, key: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = $1 AND dedupe_key = $2", INBOUND, key
        )
    )


async def thread_messages(user: Api, memory_id: str) -> list[dict[str, Any]]:
    resp = await user.get(f"/api/memories/{memory_id}/messages", params={"sortOrder": "asc"})
    assert resp.status == 200, resp.body
    return list(resp.body["messages"])


async def message(user: Api, memory_id: str, message_id: str) -> dict[str, Any]:
    resp = await user.get(f"/api/memories/{memory_id}/messages/{message_id}")
    assert resp.status == 200, resp.body
    return dict(resp.body["message"])


async def start_thread(
    user: Api, driver: WebhookDriver, number: str, contact: str, name: str = "Ada"
) -> str:
    """A first inbound message from ``contact``; returns the new thread's memory id once
    that message is stored too (the thread commits first, its message right after: a
    socket opened in between would see the message's event as a new one)."""
    resp = await driver.post(driver.text(number, wa_id=contact, name=name, body="Hi!"))
    assert resp.status == 200, resp.text

    async def thread() -> str | None:
        found = await user.get("/api/memories", params={"search": name})
        for memory in found.body["memories"]:
            if (memory["metadata"] or {}).get("waId") == contact and memory["messageCount"]:
                return str(memory["id"])
        return None

    return await eventually(thread)


# -- webhook verification and signatures ----------------------------------------------------


async def test_verification_handshake(driver: WebhookDriver, contract: Contract) -> None:
    path = "/api/webhooks/whatsapp"
    good = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    resp = await driver.verify(good)
    assert (resp.status, resp.text) == (200, "1158201444")

    for bad in (
        {**good, "hub.verify_token": "nope"},
        {**good, "hub.mode": "unsubscribe"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
    ):
        refused = await driver.verify(bad)
        assert refused.status == 403, bad

    contract.check(Response(resp.status, resp.text, resp.headers), "GET", path)
    contract.check(Response(refused.status, refused.body, refused.headers), "GET", path)


async def test_bad_signatures_and_bodies_store_nothing(
    api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver, contract: Contract
) -> None:
    _, number = await connected_user(api, db, graph)
    payload = driver.text(number, wa_id=wa_id(), name="Eve", body="let me in")
    wamid = payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    body = meta_json(payload)
    for kwargs in (
        {"signature": None},
        {"signature": "sha256=" + "0" * 64},
        {"signature": sign(APP_SECRET, body + b" ")},
        {"signature": "valid", "secret": "another-app-secret"},
        {"signature": sign(APP_SECRET, body)[7:]},  # no "sha256=" prefix
    ):
        refused = await driver.post(payload, **kwargs)
        assert refused.status == 403, kwargs
        assert refused.body["error"]["code"] in ("invalid_signature", "forbidden")
    # Signed, but the bytes changed on the way: refused (the signature covers the raw body).
    tampered = body.replace(b"let me in", b"let me out")
    assert (await driver.post(raw=tampered, signature=sign(APP_SECRET, body))).status == 403
    assert await inbound_jobs(db, f"message:{wamid}") == 0

    path = "/api/webhooks/whatsapp"
    contract.check(Response(refused.status, refused.body, refused.headers), "POST", path)
    for raw in (b'{"object": "whatsapp_business_account", "entry": [', b"[1, 2]", b""):
        bad = await driver.post(raw=raw)
        assert bad.status == 400, raw
        contract.check(Response(bad.status, bad.body, bad.headers), "POST", path)
    assert await inbound_jobs(db, f"message:{wamid}") == 0

    # A valid signature over Meta's escaping (\/ and \uXXXX) is accepted as sent.
    ok = await driver.post(payload)
    assert ok.status == 200
    assert ok.body == {"received": 1, "stored": 1, "duplicates": 0, "ignored": 0}
    contract.check(Response(ok.status, ok.body, ok.headers), "POST", path)
    assert await inbound_jobs(db, f"message:{wamid}") == 1


async def test_unknown_phone_number_is_acknowledged_and_not_stored(
    db: Database, driver: WebhookDriver
) -> None:
    payload = driver.text("999000111222333", wa_id=wa_id(), name="Nobody", body="hello?")
    wamid = payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    resp = await driver.post(payload)
    assert resp.status == 200
    assert resp.body == {"received": 1, "stored": 0, "duplicates": 0, "ignored": 1}
    assert await inbound_jobs(db, f"message:{wamid}") == 0
    other = await driver.post({"object": "page", "entry": []})
    assert other.status == 200 and other.body["ignored"] == 1


# -- inbound -----------------------------------------------------------------------------------


async def test_inbound_text_reaches_both_devices_once_in_its_contacts_thread(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    async with (
        connect(ws_url(node), user.token) as phone,
        connect(ws_url(node), user.token) as laptop,
    ):
        payload = driver.text(
            number, wa_id=contact, name="Ada Lovelace", body="Pastéis at 5? https://x.example/a"
        )
        wamid = payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        resp = await driver.post(payload)
        assert resp.status == 200 and resp.body["stored"] == 1

        created: list[dict[str, Any]] = []
        for device in (phone, laptop):
            category = await next_event(device, "category.created")
            assert category.data["name"] == "WhatsApp"
            memory = await next_event(device, "memory.created")
            assert memory.data["categoryId"] == category.data["id"]
            assert memory.data["title"] == "Ada Lovelace"
            assert memory.data["metadata"] == {
                "source": "whatsapp", "waId": contact, "contactName": "Ada Lovelace"
            }  # fmt: skip
            event = await next_event(device, "message.created")
            created.append(event.data)
        assert created[0] == created[1]
        msg = created[0]
        assert msg["memoryId"] == memory.data["id"]
        assert msg["content"] == "Pastéis at 5? https://x.example/a"
        assert msg["messageType"] == "text"
        meta = msg["metadata"]
        assert meta["source"] == "whatsapp" and meta["wamid"] == wamid
        assert meta["from"] == contact and meta["contactName"] == "Ada Lovelace"
        assert meta["participant"] == {"kind": "whatsapp", "waId": contact, "name": "Ada Lovelace"}

        # Meta retries the same delivery: acknowledged, nothing new.
        again = await driver.post(payload)
        assert again.status == 200 and again.body["duplicates"] == 1
        # Even after the inbox row is gone (days later), the wamid stores one message.
        await db.execute("DELETE FROM jobs WHERE kind = $1 AND dedupe_key = $2",
                         INBOUND, f"message:{wamid}")  # fmt: skip
        assert (await driver.post(payload)).body["stored"] == 1
        await eventually(lambda: _job_done(db, f"message:{wamid}"))

        second = driver.text(number, wa_id=contact, name="Ada Lovelace", body="Or 6")
        assert (await driver.post(second)).body["stored"] == 1
        for device in (phone, laptop):
            event = await device.next_event()  # the very next event: no duplicate before it
            assert event.event == "message.created" and event.data["content"] == "Or 6"
            assert event.data["memoryId"] == memory.data["id"]
        assert [m["content"] for m in await thread_messages(user, memory.data["id"])] == [
            "Pastéis at 5? https://x.example/a", "Or 6"
        ]  # fmt: skip


async def _job_done(db: Database, key: str) -> bool:
    status = await db.fetchval(
        "SELECT status FROM jobs WHERE kind = $1 AND dedupe_key = $2", INBOUND, key
    )
    return bool(status == "done")


async def test_media_messages_are_downloaded_and_unknown_types_kept(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact, name="Grace")
    image_id, image = graph.add_media(b"\x89PNG\r\n\x1a\n" + b"pixels" * 1000, "image/png")
    voice_id, voice = graph.add_media(b"OggS" + b"\x00opus" * 500, "audio/ogg; codecs=opus")
    doc_id, doc = graph.add_media(b"%PDF-1.7 report", "application/pdf")

    def media(item_id: str, item: Any, **extra: Any) -> dict[str, Any]:
        return {"id": item_id, "mime_type": item.mime_type, "sha256": item.sha256_b64, **extra}

    posts = [
        driver.message(number, wa_id=contact, name="Grace", type="image",
                       content=media(image_id, image, caption="The harbour")),
        driver.message(number, wa_id=contact, name="Grace", type="audio",
                       content=media(voice_id, voice, voice=True)),
        driver.message(number, wa_id=contact, name="Grace", type="document",
                       content=media(doc_id, doc, filename="Q3 report.pdf")),
        driver.message(number, wa_id=contact, name="Grace", type="location",
                       content={"latitude": 38.7, "longitude": -9.14, "name": "Belém"}),
        driver.message(number, wa_id=contact, name="Grace", type="unsupported",
                       errors=[{"code": 131051, "title": "Message type unknown",
                                "message": "Message type unknown"}]),
        driver.message(number, wa_id=contact, name="Grace", type="image",
                       content=media("404404404", image)),  # Meta no longer has it
    ]  # fmt: skip
    for payload in posts:
        assert (await driver.post(payload)).body["stored"] == 1

    async def all_stored() -> list[dict[str, Any]] | None:
        found = await thread_messages(user, memory_id)
        # Media comes after its message, as a job of its own: wait for every outcome.
        waiting = [m for m in found if (m["metadata"] or {}).get("mediaStatus") == "pending"]
        return found if len(found) == 1 + len(posts) and not waiting else None

    stored = {
        m["metadata"]["waType"] + str(i): m for i, m in enumerate(await eventually(all_stored))
    }
    by_type = {m["metadata"]["wamid"]: m for m in stored.values()}
    wamids = [p["entry"][0]["changes"][0]["value"]["messages"][0]["id"] for p in posts]
    pic, note, report, place, odd, gone = (by_type[w] for w in wamids)

    assert (pic["messageType"], pic["content"]) == ("image", "The harbour")
    assert (note["messageType"], note["content"]) == ("voice", "[voice message]")
    assert (report["messageType"], report["content"]) == ("document", "Q3 report.pdf")
    # Stored through the blob store like an upload: the type sniffed from the bytes.
    for msg, item, sniffed in (
        (pic, image, "image/png"), (note, voice, "audio/ogg"), (report, doc, "application/pdf")
    ):  # fmt: skip
        assert len(msg["attachments"]) == 1
        row = await db.fetchrow(
            "SELECT * FROM files WHERE id = $1::uuid AND user_id = $2::uuid",
            msg["attachments"][0], user.user["id"],  # type: ignore[attr-defined]
        )  # fmt: skip
        assert row is not None and row["storage_provider"] == "local"
        assert str(row["message_id"]) == msg["id"] and str(row["memory_id"]) == memory_id
        assert row["file_size"] == len(item.data) and row["file_type"] == sniffed
        assert row["sha256"] == item.sha256_hex
        blobs = files.blob_store(node.app[SERVICES], row["storage_provider"])
        assert b"".join([c async for c in blobs.open(row["storage_path"])]) == item.data
    original = await db.fetchval(
        "SELECT original_filename FROM files WHERE id = $1::uuid", report["attachments"][0]
    )
    assert original == "Q3 report.pdf"

    assert place["content"].startswith("[location] Belém") and place["metadata"]["raw"]["location"]
    assert odd["content"] == "[unsupported] Message type unknown"
    assert odd["metadata"]["raw"]["errors"][0]["code"] == 131051
    # Media Meta cannot give us: the message is kept, with the reason, never dropped.
    assert gone["attachments"] == [] and gone["metadata"]["mediaError"]["code"] == 100
    assert gone["metadata"]["mediaStatus"] == "failed"
    assert gone["metadata"]["mediaError"]["title"].startswith("Unsupported get request")
    assert {pic["metadata"]["mediaStatus"], note["metadata"]["mediaStatus"]} == {"stored"}


async def test_media_messages_reach_devices_at_once_and_get_their_file_once_later(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    """While Meta's media lookups fail, every inbound media message still reaches the
    devices within 2 s (``mediaStatus: pending``); once the lookups recover, each gets its
    file exactly once, with a ``message.updated`` event."""
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact, name="Hedy")
    items = [graph.add_media(b"\x89PNG\r\n\x1a\n" + bytes([i]) * 2000, "image/png")
             for i in range(4)]  # fmt: skip
    graph.fail("media", "500", times=1000)
    async with connect(ws_url(node), user.token) as device:
        started = time.monotonic()
        wamids = []
        for i, (media_id, item) in enumerate(items):
            payload = driver.message(
                number, wa_id=contact, name="Hedy", type="image",
                content={"id": media_id, "mime_type": item.mime_type,
                         "sha256": item.sha256_b64, "caption": f"photo {i}"},
            )  # fmt: skip
            wamids.append(payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"])
            assert (await driver.post(payload)).body["stored"] == 1
        created: dict[str, dict[str, Any]] = {}
        while len(created) < len(items):
            event = await next_event(device, "message.created", timeout=2.0)
            created[event.data["metadata"]["wamid"]] = event.data
        assert time.monotonic() - started < 2.0
        assert set(created) == set(wamids)
        for i, wamid in enumerate(wamids):
            msg = created[wamid]
            assert (msg["messageType"], msg["content"]) == ("image", f"photo {i}")
            assert msg["attachments"] == [] and msg["metadata"]["mediaStatus"] == "pending"
            assert msg["metadata"]["from"] == contact and msg["memoryId"] == memory_id
        await asyncio.sleep(0.3)  # a few failing lookups and retries
        assert not any(m["attachments"] for m in await thread_messages(user, memory_id))

        graph._failures["media"].clear()  # Meta's media host is back
        updated: dict[str, dict[str, Any]] = {}
        while len(updated) < len(items):
            event = await next_event(device, "message.updated", timeout=15.0)
            wamid = event.data["metadata"]["wamid"]
            assert wamid not in updated  # one update per message: the file, once
            updated[wamid] = event.data
        for wamid, msg in updated.items():
            assert msg["metadata"]["mediaStatus"] == "stored" and len(msg["attachments"]) == 1
            assert msg["id"] == created[wamid]["id"]
        await asyncio.sleep(0.3)
        with pytest.raises(TimeoutError):
            await next_event(device, "message.updated", timeout=0.3)
    rows = await db.fetch(
        "SELECT message_id, count(*) AS n FROM files WHERE user_id = $1::uuid GROUP BY 1",
        user.user["id"],  # type: ignore[attr-defined]
    )
    assert sorted(r["n"] for r in rows) == [1] * len(items)
    assert {str(r["message_id"]) for r in rows} == {m["id"] for m in created.values()}


async def _wa_media(
    driver: WebhookDriver,
    number: str,
    contact: str,
    media_id: str,
    item: Any,
    kind: str,
    **extra: Any,
) -> str:
    """Post an inbound media message; returns its wamid."""
    content = {"id": media_id, "mime_type": item.mime_type, "sha256": item.sha256_b64, **extra}
    payload = driver.message(number, wa_id=contact, name="Ines", type=kind, content=content)
    assert (await driver.post(payload)).body["stored"] == 1
    return str(payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"])


async def _by_wamid(user: Api, memory_id: str, wamid: str, *, done: bool) -> dict[str, Any] | None:
    for m in await thread_messages(user, memory_id):
        meta = m["metadata"] or {}
        if meta.get("wamid") == wamid and (not done or meta.get("mediaStatus") != "pending"):
            return m
    return None


async def test_an_inbound_voice_note_is_transcribed_into_its_message(
    node: RunningServer,
    api: Api,
    db: Database,
    graph: FakeGraph,
    driver: WebhookDriver,
    tmp_path: Path,
) -> None:
    """A WhatsApp voice note (Opus in Ogg, as WhatsApp sends it) goes through the same
    interface as an upload: stored in the blob store, transcribed, and the
    ``[voice message]`` placeholder replaced by what was said."""
    from tests.files.conftest import speak

    audio = speak("one two three four five", tmp_path / "wa-voice")
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact, name="Ines")
    media_id, item = graph.add_media(audio, "audio/ogg; codecs=opus")
    wamid = await _wa_media(driver, number, contact, media_id, item, "audio", voice=True)

    async def transcribed() -> dict[str, Any] | None:
        found = await _by_wamid(user, memory_id, wamid, done=True)
        return found if found and found["content"] != "[voice message]" else None

    msg = await eventually(transcribed, timeout=90)
    assert msg["messageType"] == "voice" and msg["metadata"]["mediaStatus"] == "stored"
    assert {"three", "four"} <= set(msg["content"].split()), msg["content"]
    assert msg["metadata"]["transcription"]["status"] == "completed"
    assert msg["metadata"]["transcription"]["engine"].startswith("pocketsphinx-")
    (f,) = msg["files"]
    assert (f["fileType"], f["kind"], f["fileSize"]) == ("audio/ogg", "audio", len(audio))
    assert f["metadata"]["source"] == "whatsapp" and f["metadata"]["wamid"] == wamid
    # One file, one transcription: the job ran once per wamid.
    count = await db.fetchval(
        "SELECT count(*) FROM transcriptions WHERE file_id = $1::uuid", f["id"]
    )
    assert count == 1


async def test_a_download_that_does_not_match_metas_sha256_is_never_stored(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    """Damaged once: retried, and stored whole. Damaged every time: ``failed`` with the
    reason, and no row and no blob (not even a partial one) for its file id."""
    user, number = await connected_user(api, db, graph)
    user_id = user.user["id"]  # type: ignore[attr-defined]
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact, name="Ines")
    data = b"%PDF-1.7 minutes " + bytes(range(256)) * 40
    once_id, once = graph.add_media(data, "application/pdf")
    graph.fail("download", "corrupt", times=1)
    wamid = await _wa_media(driver, number, contact, once_id, once, "document")
    msg = await eventually(lambda: _by_wamid(user, memory_id, wamid, done=True))
    assert msg["metadata"]["mediaStatus"] == "stored" and len(msg["attachments"]) == 1
    assert msg["files"][0]["sha256"] == once.sha256_hex
    assert "mediaError" not in msg["metadata"]

    bad_id, bad = graph.add_media(data + b"!", "application/pdf")
    graph.fail("download", "corrupt", times=100)
    try:
        wamid = await _wa_media(driver, number, contact, bad_id, bad, "document")
        msg = await eventually(lambda: _by_wamid(user, memory_id, wamid, done=True), 30)
    finally:
        graph._failures["download"].clear()
    assert msg["metadata"]["mediaStatus"] == "failed" and msg["attachments"] == []
    assert msg["metadata"]["mediaError"]["title"] == "media checksum mismatch"
    file_id = uuid.uuid5(uuid.NAMESPACE_URL, f"memoryd:whatsapp:{user_id}:{wamid}")
    assert await db.fetchval("SELECT count(*) FROM files WHERE id = $1", file_id) == 0
    root = node.app[SERVICES].settings.data_dir / "files" / user_id
    assert not [p.name for p in root.iterdir() if str(file_id) in p.name]


async def test_media_over_the_size_cap_fail_at_once_and_store_nothing(
    base_settings: Settings,
    graph: FakeGraph,
    db: Database,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """``WHATSAPP_MAX_MEDIA_BYTES``: over it (as Meta's lookup says, or as the bytes
    flow), the media is refused without retries, and no blob is left."""
    from memoryd.bridges.blobs import LocalBlobStore
    from memoryd.bridges.whatsapp import GraphError

    async with whatsapp_node(base_settings, graph, whatsapp_max_media_bytes=4096) as small:
        api, driver = Api(http, small.url), WebhookDriver(http, small.url, APP_SECRET)
        user, number = await connected_user(api, db, graph)
        contact = wa_id()
        memory_id = await start_thread(user, driver, number, contact, name="Ines")
        big_id, big = graph.add_media(b"%PDF-1.7 " + b"x" * 10_000, "application/pdf")
        wamid = await _wa_media(driver, number, contact, big_id, big, "document")
        msg = await eventually(lambda: _by_wamid(user, memory_id, wamid, done=True))
        assert msg["metadata"]["mediaStatus"] == "failed" and msg["attachments"] == []
        assert msg["metadata"]["mediaError"]["title"] == "media larger than 4096 bytes"
        file_id = uuid.uuid5(
            uuid.NAMESPACE_URL,
            f"memoryd:whatsapp:{user.user['id']}:{wamid}",  # type: ignore[attr-defined]
        )
        assert await db.fetchval("SELECT count(*) FROM files WHERE id = $1", file_id) == 0

        # The stream itself stops at the cap (a lookup without file_size), mid-blob.
        bridge = small.app[SERVICES].whatsapp
        assert bridge is not None
        info = await bridge.graph.media(graph.token, big_id)
        store = LocalBlobStore(tmp_path)
        chunks = bridge.graph.stream(graph.token, info.url, max_bytes=4096, sha256=info.sha256)
        with pytest.raises(GraphError) as refused:
            await store.put_stream("files/u/big", chunks)
        assert refused.value.status == 413 and not refused.value.transient
        assert not await asyncio.to_thread(lambda: list(tmp_path.rglob("*big*")))


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


async def test_media_land_in_s3_when_that_is_the_storage_backend(
    base_settings: Settings,
    graph: FakeGraph,
    db: Database,
    http: aiohttp.ClientSession,
    moto_url: str,
) -> None:
    s3 = {"storage_backend": "s3", "s3_bucket": "memoryd-wa", "s3_endpoint_url": moto_url,
          "s3_access_key_id": "testing", "s3_secret_access_key": "testing"}  # fmt: skip
    async with whatsapp_node(base_settings, graph, **s3) as s3_node:
        store = files.blob_store(s3_node.app[SERVICES], "s3")
        await store._client.create_bucket(Bucket="memoryd-wa")  # type: ignore[attr-defined]
        api, driver = Api(http, s3_node.url), WebhookDriver(http, s3_node.url, APP_SECRET)
        user, number = await connected_user(api, db, graph)
        contact = wa_id()
        memory_id = await start_thread(user, driver, number, contact, name="Ines")
        from tests.files.conftest import png

        picture = png(320, 200)
        media_id, item = graph.add_media(picture, "image/png")
        wamid = await _wa_media(driver, number, contact, media_id, item, "image")
        msg = await eventually(lambda: _by_wamid(user, memory_id, wamid, done=True))
        assert msg["metadata"]["mediaStatus"] == "stored", msg["metadata"]
        row = await db.fetchrow("SELECT * FROM files WHERE id = $1::uuid", msg["attachments"][0])
        assert row["storage_provider"] == "s3" and row["thumbnail_path"]
        assert b"".join([c async for c in store.open(row["storage_path"])]) == picture
        thumb = await user.get(msg["files"][0]["thumbnailUrl"])
        assert thumb.status == 200


# -- outbound ----------------------------------------------------------------------------------


async def test_a_reply_reaches_the_graph_api_exactly_once_and_statuses_only_move_forward(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact)
    async with (
        connect(ws_url(node), user.token) as phone,
        connect(ws_url(node), user.token) as laptop,
    ):
        reply = await phone.request(
            "message.send", memory_id=memory_id, client_msg_id="reply-1", content="See you there"
        )
        assert reply["status"] == "pending"
        assert reply["metadata"] == {"source": "whatsapp", "to": contact}
        for device in (phone, laptop):
            created = await next_event(device, "message.created")
            assert created.data["id"] == reply["id"] and created.data["status"] == "pending"
            sent = await next_event(device, "message.updated")
            assert sent.data["status"] == "sent"
        wamid = sent.data["metadata"]["wamid"]
        assert [(s.to, s.body, s.wamid, s.callback) for s in graph.sent_to(number)] == [
            (contact, "See you there", wamid, reply["id"])
        ]

        # The same clientMsgId again (a device retrying): the same message, no second send.
        again = await laptop.request(
            "message.send", memory_id=memory_id, client_msg_id="reply-1", content="See you there"
        )
        assert again["id"] == reply["id"]
        # The job run again (a node that died after sending): the recorded wamid stops it.
        await db.execute(
            "UPDATE jobs SET status = 'pending' WHERE kind = $1 AND dedupe_key = $2",
            OUTBOUND,
            reply["id"],
        )
        node.app[JOBS].wake()
        await eventually(lambda: _outbound_status(db, reply["id"], "done"))
        rerun = await JobStore(db).by_key(OUTBOUND, reply["id"])
        assert rerun is not None and rerun.attempts == 2 and rerun.result["resent"] is False
        assert len(graph.sent_to(number)) == 1

        # Statuses arrive out of order: read, then delivered, sent, read and failed. Their
        # jobs may run in any order; whichever, the message only moves forward and ends
        # "read", the furthest status reported.
        for status in ("read", "delivered", "sent", "read", "failed"):
            errors = [driver.reengagement_error()] if status == "failed" else None
            payload = driver.status(
                number, wamid=wamid, status=status, recipient_id=contact, errors=errors
            )
            assert (await driver.post(payload)).status == 200
        seen = ["sent"]
        while seen[-1] != "read":
            seen.append((await next_event(phone, "message.updated")).data["status"])
        order = ["sent", "failed", "delivered", "read"]
        assert [order.index(s) for s in seen] == sorted({order.index(s) for s in seen}), seen
        await asyncio.sleep(0.3)  # give the stale statuses time to (not) change anything
        assert phone.pending_events() == 0
        final = await message(user, memory_id, reply["id"])
        assert final["status"] == "read" and "whatsappError" not in final["metadata"]


async def _outbound_status(db: Database, message_id: str, status: str) -> bool:
    found = await db.fetchval(
        "SELECT status FROM jobs WHERE kind = $1 AND dedupe_key = $2", OUTBOUND, message_id
    )
    return bool(found == status)


async def test_a_failed_status_carries_the_error_for_the_user(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact)
    async with connect(ws_url(node), user.token) as phone:
        reply = await phone.request(
            "message.send", memory_id=memory_id, client_msg_id="r2", content="Still there?"
        )
        sent = await next_event(phone, "message.updated")
        payload = driver.status(
            number,
            wamid=sent.data["metadata"]["wamid"],
            status="failed",
            recipient_id=contact,
            errors=[driver.reengagement_error()],
        )
        assert (await driver.post(payload)).status == 200
        failed = await next_event(phone, "message.updated")
        assert failed.data["id"] == reply["id"] and failed.data["status"] == "failed"
        error = failed.data["metadata"]["whatsappError"]
        assert (error["code"], error["title"]) == (131047, "Re-engagement message")
        assert "24 hours" in error["details"]

        # Meta reports it delivered after all (its webhooks come in any order): the better
        # news wins, and the error goes.
        payload = driver.status(
            number, wamid=sent.data["metadata"]["wamid"], status="delivered", recipient_id=contact
        )
        assert (await driver.post(payload)).status == 200
        delivered = await next_event(phone, "message.updated")
        assert delivered.data["status"] == "delivered"
        assert "whatsappError" not in delivered.data["metadata"]


async def test_graph_errors_fail_or_retry_and_force_sync_redrives(
    node: RunningServer,
    api: Api,
    db: Database,
    graph: FakeGraph,
    driver: WebhookDriver,
    contract: Contract,
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact)
    messages_path = f"/api/memories/{memory_id}/messages"

    # Throttled, then an outage, then it recovers: sent once, after two failed attempts.
    graph.fail("send", "429", retry_after=0.05)
    graph.fail("send", "500")
    resp = await user.post(messages_path, json={"content": "first try", "clientMsgId": "a1"})
    assert resp.status == 201 and resp.body["message"]["status"] == "pending"
    first = resp.body["message"]["id"]

    async def sent(message_id: str) -> dict[str, Any] | None:
        found = await message(user, memory_id, message_id)
        return found if found["status"] == "sent" else None

    assert (await eventually(lambda: sent(first)))["metadata"]["wamid"]
    assert graph.send_attempts(number) == 3 and len(graph.sent_to(number)) == 1

    # 131047 from the API: failed for good, the reason shown on the message and in status.
    graph.fail("send", "131047")
    resp = await user.post(messages_path, json={"content": "too late", "clientMsgId": "a2"})
    second = resp.body["message"]["id"]

    async def failed() -> dict[str, Any] | None:
        found = await message(user, memory_id, second)
        return found if found["status"] == "failed" else None

    error = (await eventually(failed))["metadata"]["whatsappError"]
    assert (error["code"], error["title"]) == (131047, "Re-engagement message")
    await eventually(lambda: _outbound_status(db, second, "failed"))
    status = await user.get("/api/sync/status")
    assert status.status == 200, status.body
    contract.check(status, "GET", "/api/sync/status")
    (provider,) = status.body["providers"]
    assert provider["name"] == "whatsapp" and provider["status"] == "error"
    assert provider["failedJobs"] == 1 and "131047" in provider["errorMessage"]
    assert provider["lastSync"] is not None

    # Force a sync: the failed send goes again and, now accepted, the message is sent.
    forced = await user.post("/api/sync/force", json={"provider": "whatsapp", "direction": "push"})
    assert forced.status == 200, forced.body
    contract.check(forced, "POST", "/api/sync/force")
    assert forced.body["status"] == "started" and forced.body["jobs"] == 1
    uuid.UUID(forced.body["syncId"])
    done = await eventually(lambda: sent(second))
    assert "whatsappError" not in done["metadata"]
    assert [s.body for s in graph.sent_to(number)] == ["first try", "too late"]
    healthy = (await user.get("/api/sync/status")).body["providers"][0]
    assert healthy["status"] == "connected" and healthy["failedJobs"] == 0

    bad = await user.post("/api/sync/force", json={"provider": "telegram", "direction": "up"})
    assert bad.status == 400
    assert {d["field"] for d in bad.body["error"]["details"]} == {"provider", "direction"}
    contract.check(bad, "POST", "/api/sync/force")


async def test_a_send_whose_answer_was_lost_is_never_sent_twice(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    memory_id = await start_thread(user, driver, number, contact)
    messages_path = f"/api/memories/{memory_id}/messages"

    # Meta takes the message, the connection drops before its answer: the retry does not
    # send again, and with no word from Meta the user is told the delivery is unknown.
    graph.fail("send", "lost")
    resp = await user.post(messages_path, json={"content": "maybe", "clientMsgId": "l1"})
    lost = resp.body["message"]["id"]

    async def status_of(message_id: str, status: str) -> dict[str, Any] | None:
        found = await message(user, memory_id, message_id)
        return found if found["status"] == status else None

    failed = await eventually(lambda: status_of(lost, "failed"))
    assert failed["metadata"]["whatsappError"]["title"] == "Delivery unknown"
    await eventually(lambda: _outbound_status(db, lost, "failed"))
    assert [s.body for s in graph.sent_to(number)] == ["maybe"]
    assert graph.send_attempts(number) == 1

    # A forced sync re-drives the job, which still refuses to send it a second time.
    forced = await user.post("/api/sync/force", json={"provider": "whatsapp", "direction": "push"})
    assert forced.status == 200 and forced.body["jobs"] == 1

    async def failed_again() -> bool:
        attempts = await db.fetchval(
            "SELECT attempts FROM jobs WHERE kind = $1 AND dedupe_key = $2 AND status = 'failed'",
            OUTBOUND,
            lost,
        )
        return attempts == 1  # re-driven (attempts back to 0), taken once, failed again

    await eventually(failed_again)
    assert graph.send_attempts(number) == 1

    # Meta's status says it arrived after all: that beats our "unknown".
    (sent,) = graph.sent_to(number)
    assert sent.callback == lost
    status = driver.status(
        number, wamid=sent.wamid, status="delivered", recipient_id=contact, callback=lost
    )
    assert (await driver.post(status)).status == 200
    delivered = await eventually(lambda: status_of(lost, "delivered"))
    assert delivered["metadata"]["wamid"] == sent.wamid
    assert "whatsappError" not in delivered["metadata"]


async def test_sends_respect_the_per_number_throughput(
    base_settings: Settings, http: aiohttp.ClientSession, db: Database, graph: FakeGraph
) -> None:
    async with whatsapp_node(base_settings, graph, whatsapp_send_rate=10.0) as server:
        api = Api(http, server.url)
        driver = WebhookDriver(http, server.url, APP_SECRET)
        user, number = await connected_user(api, db, graph)
        memory_id = await start_thread(user, driver, number, wa_id())
        sends = [
            user.post(f"/api/memories/{memory_id}/messages", json={"content": f"m{i}"})
            for i in range(15)
        ]
        assert all(r.status == 201 for r in await asyncio.gather(*sends))
        await eventually(lambda: _count(graph, number, 15))
        times = sorted(s.at for s in graph.sent_to(number))
        # A burst of 10, then 10 per second: the last 5 need at least 0.4 s more.
        assert times[-1] - times[0] >= 0.4, times[-1] - times[0]


async def _count(graph: FakeGraph, number: str, n: int) -> bool:
    return len(graph.sent_to(number)) >= n


# -- nothing acknowledged is lost -----------------------------------------------------------


async def test_a_webhook_stored_by_a_node_that_died_is_processed_by_a_fresh_one(
    base_settings: Settings, http: aiohttp.ClientSession, db: Database, graph: FakeGraph
) -> None:
    async with whatsapp_node(base_settings, graph, run_jobs=False) as doomed:
        api = Api(http, doomed.url)
        user, number = await connected_user(api, db, graph)
        driver = WebhookDriver(http, doomed.url, APP_SECRET)
        first = driver.text(number, wa_id=(contact := wa_id()), name="Linus", body="before")
        second = driver.text(number, wa_id=contact, name="Linus", body="the crash")
        for payload in (first, second):
            resp = await driver.post(payload)
            assert resp.status == 200 and resp.body["stored"] == 1
        # The second job was even taken by a node that then died, lease and all.
        store = JobStore(db)
        key = "message:" + second["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        await db.execute(
            "UPDATE jobs SET run_after = now() + interval '1 hour'"
            " WHERE kind = $1 AND dedupe_key <> $2 AND status = 'pending'",
            INBOUND,
            key,
        )
        claimed = await store.claim([INBOUND], "dead-node", lease_seconds=0.5, limit=1)
        assert [j.dedupe_key for j in claimed] == [key]
        await db.execute(
            "UPDATE jobs SET run_after = now() WHERE kind = $1 AND status = 'pending'", INBOUND
        )
        assert await thread_count(db, user) == 0  # nothing processed yet: the node is gone

    async with whatsapp_node(base_settings, graph) as fresh:
        async with connect(ws_url(fresh), user.token) as device:
            contents = []
            while len(contents) < 2:
                event = await next_event(device, "message.created", timeout=15)
                contents.append(event.data["content"])
            assert sorted(contents) == ["before", "the crash"]
            # The job is marked done just after its message commits; wait for that before
            # this node stops (stopping cancels a job still finishing).
            taken_over = await eventually(lambda: _done(store, key))
        assert taken_over is not None and taken_over.status == "done"
        assert taken_over.attempts == 2 and taken_over.leased_by != "dead-node"


async def _done(store: JobStore, key: str) -> Job | None:
    job = await store.by_key(INBOUND, key)
    return job if job is not None and job.status == "done" else None


async def thread_count(db: Database, user: Api) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM messages WHERE user_id = $1::uuid",
            user.user["id"],  # type: ignore[attr-defined]
        )
    )


# -- connect, status, disconnect, RBAC ---------------------------------------------------------


async def test_connect_status_disconnect_and_rbac(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, contract: Contract
) -> None:
    plain = await api.register()
    for method, path, body in (
        ("GET", "/api/sync/status", None),
        ("POST", "/api/sync/whatsapp/connect",
         {"phoneNumber": "1", "businessAccountId": "2", "accessToken": "x" * 10}),
        ("DELETE", "/api/sync/whatsapp", None),
        ("POST", "/api/sync/force", {}),
    ):  # fmt: skip
        resp = await plain.request(method, path, json=body)
        assert resp.status == 403, (path, resp.body)
        assert resp.body["error"]["details"] == {"permission": "sync:whatsapp"}
        contract.check(resp, method, path)

    user = await promote(await api.register(), db)
    status = await user.get("/api/sync/status")
    nothing = {"lastSync": None, "pendingJobs": 0, "failedJobs": 0}
    assert status.body == {"providers": [{"name": "whatsapp", "status": "disconnected", **nothing}]}
    number = graph.add_number(display="+1 555-0100", name="Ada's Bakery")
    connect_path = "/api/sync/whatsapp/connect"
    request = {"phoneNumber": number, "businessAccountId": "102290129340398",
               "accessToken": graph.token}  # fmt: skip

    wrong_token = await user.post(connect_path, json={**request, "accessToken": "EAAGwrong"})
    assert wrong_token.status == 400 and wrong_token.body["error"]["code"] == "whatsapp_rejected"
    assert wrong_token.body["error"]["details"][0]["field"] == "accessToken"
    contract.check(wrong_token, "POST", connect_path)
    wrong_number = await user.post(connect_path, json={**request, "phoneNumber": "123456"})
    assert wrong_number.status == 400
    assert wrong_number.body["error"]["details"][0]["field"] == "phoneNumber"
    graph.fail("number", "500")
    down = await user.post(connect_path, json=request)
    assert down.status == 502 and down.body["error"]["code"] == "whatsapp_unavailable"
    contract.check(down, "POST", connect_path)

    ok = await user.post(connect_path, json=request)
    assert ok.status == 200, ok.body
    contract.check(ok, "POST", connect_path)
    assert ok.body == {
        "status": "connected",
        "webhookUrl": f"{node.url}/api/webhooks/whatsapp",
        "verificationCode": VERIFY_TOKEN,
        "displayPhoneNumber": "+1 555-0100",
        "verifiedName": "Ada's Bakery",
    }
    row = await db.fetchrow(
        "SELECT credentials, settings FROM sync_settings WHERE user_id = $1::uuid",
        user.user["id"],  # type: ignore[attr-defined]
    )
    assert graph.token not in str(row["credentials"])  # encrypted at rest
    secret = node.app[SERVICES].whatsapp.box  # type: ignore[union-attr]
    user_id = uuid.UUID(user.user["id"])  # type: ignore[attr-defined]
    assert secret.decrypt(row["credentials"]["accessToken"], token_aad(user_id)) == graph.token
    assert isinstance(secret, SecretBox)
    assert row["settings"]["phoneNumberId"] == number

    taken = await (await promote(await api.register(), db)).post(connect_path, json=request)
    assert taken.status == 409 and taken.body["error"]["code"] == "whatsapp_number_taken"
    contract.check(taken, "POST", connect_path)

    connected = await user.get("/api/sync/status")
    assert connected.body["providers"][0]["status"] == "connected"
    contract.check(connected, "GET", "/api/sync/status")

    gone = await user.delete("/api/sync/whatsapp")
    assert gone.status == 204
    contract.check(gone, "DELETE", "/api/sync/whatsapp")
    assert (await user.delete("/api/sync/whatsapp")).status == 204  # idempotent
    assert (await user.get("/api/sync/status")).body["providers"][0]["status"] == "disconnected"
    assert (
        await db.fetchval(
            "SELECT credentials FROM sync_settings WHERE user_id = $1::uuid",
            user.user["id"],  # type: ignore[attr-defined]
        )
        is None
    )
    refused = await user.post("/api/sync/force", json={})
    assert refused.status == 409 and refused.body["error"]["code"] == "whatsapp_not_connected"
    contract.check(refused, "POST", "/api/sync/force")
    # Once released, the number can be connected by the other account.
    assert (await user.post(connect_path, json=request)).status == 200


async def test_replying_after_disconnect_is_refused_and_plain_threads_are_untouched(
    api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    user, number = await connected_user(api, db, graph)
    memory_id = await start_thread(user, driver, number, wa_id())
    path = f"/api/memories/{memory_id}/messages"
    too_long = await user.post(path, json={"content": "x" * 4097})
    assert too_long.status == 400
    voice = await user.post(path, json={"content": "hi", "messageType": "voice"})
    assert voice.status == 400
    assert (await user.delete("/api/sync/whatsapp")).status == 204
    refused = await user.post(path, json={"content": "hello?"})
    assert refused.status == 409 and refused.body["error"]["code"] == "whatsapp_not_connected"

    plain = await user.post(
        "/api/memories", json={"title": "Notes", "metadata": {"source": "whatsapp"}}
    )
    note = await user.post(f"/api/memories/{plain.body['memory']['id']}/messages",
                           json={"content": "just a note"})  # fmt: skip
    assert note.status == 201 and note.body["message"]["status"] == "sent"


async def test_a_resend_after_disconnect_replays_the_stored_message(
    api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    """The same clientMsgId after the number was disconnected answers with the message
    stored the first time (docs/protocol.md), not 409: replay first, then check."""
    user, number = await connected_user(api, db, graph)
    memory_id = await start_thread(user, driver, number, wa_id())
    path = f"/api/memories/{memory_id}/messages"
    body = {"content": "See you at 5", "clientMsgId": "wa-replay-1"}
    first = await user.post(path, json=body)
    assert first.status == 201, first.body
    assert (await user.delete("/api/sync/whatsapp")).status == 204
    again = await user.post(path, json=body)
    assert again.status == 201, again.body
    assert again.header("Idempotent-Replayed") == "true"
    assert again.body["message"]["id"] == first.body["message"]["id"]
    fresh = await user.post(path, json={**body, "clientMsgId": "wa-replay-2"})
    assert fresh.status == 409 and fresh.body["error"]["code"] == "whatsapp_not_connected"


async def test_connect_by_phone_number_in_any_formatting(
    api: Api, db: Database, graph: FakeGraph, contract: Contract
) -> None:
    """The seed's front end sends the phone number itself: it is resolved among the
    account's numbers (Graph's paging followed), an id still works, and so does an
    explicit ``phoneNumberId``; a number the account lacks is a 400 listing its numbers."""
    account = "1029" + str(uuid.uuid4().int)[:11]
    area, line = f"{uuid.uuid4().int % 1000:03d}", f"{uuid.uuid4().int % 10000:04d}"
    others = [graph.add_number(account=account) for _ in range(graph.page_size + 5)]
    wanted = graph.add_number(display=f"+1 555-{area}-{line}", name="Ada's", account=account)
    user = await promote(await api.register(), db)
    path = "/api/sync/whatsapp/connect"
    base = {"businessAccountId": account, "accessToken": graph.token}

    async def stored_number() -> str:
        return str(
            await db.fetchval(
                "SELECT settings->>'phoneNumberId' FROM sync_settings WHERE user_id = $1::uuid",
                user.user["id"],  # type: ignore[attr-defined]
            )
        )

    list_path = f"/v21.0/{account}/phone_numbers"
    for written in (f"+1 555-{area}-{line}", f"1 (555) {area} {line}", f"1555{area}{line}",
                    f"+1.555.{area}.{line}"):  # fmt: skip
        before = sum(1 for m, p, _ in graph.requests if m == "GET" and p == list_path)
        resp = await user.post(path, json={**base, "phoneNumber": written})
        assert resp.status == 200, (written, resp.body)
        assert resp.body["displayPhoneNumber"] == f"+1 555-{area}-{line}"
        assert resp.body["verifiedName"] == "Ada's"
        contract.check(resp, "POST", path)
        assert await stored_number() == wanted
        pages = sum(1 for m, p, _ in graph.requests if m == "GET" and p == list_path) - before
        assert pages == 2  # 31 numbers: two pages of at most 25
    by_id = await user.post(path, json={**base, "phoneNumber": others[0]})
    assert by_id.status == 200 and await stored_number() == others[0]
    explicit = await user.post(path, json={**base, "phoneNumberId": wanted})
    assert explicit.status == 200 and await stored_number() == wanted

    unknown = await user.post(path, json={**base, "phoneNumber": "+44 20 7946 0000"})
    assert unknown.status == 400, unknown.body
    assert unknown.body["error"]["code"] == "whatsapp_unknown_number"
    detail = unknown.body["error"]["details"][0]
    first = graph.numbers[others[0]]["display_phone_number"]
    assert detail["field"] == "phoneNumber" and f"it has: {first}, " in detail["message"]
    assert detail["message"].endswith(" and 11 more")  # 31 numbers, the first 20 named
    contract.check(unknown, "POST", path)
    for bad in ({**base}, {**base, "phoneNumber": "call me"}):
        refused = await user.post(path, json=bad)
        assert refused.status == 400, refused.body
        assert refused.body["error"]["details"][0]["field"] == "phoneNumber"
    nobody = await user.post(
        path, json={**base, "businessAccountId": "999000111", "phoneNumber": "+1 555 000 0000"}
    )
    assert (
        nobody.status == 400 and nobody.body["error"]["details"][0]["field"] == "businessAccountId"
    )


async def test_one_unreadable_item_does_not_reject_the_delivery(
    node: RunningServer, api: Api, db: Database, graph: FakeGraph, driver: WebhookDriver
) -> None:
    """Meta batches items: a message, a status, a change or an entry that cannot be read
    is skipped and counted as ignored; every readable item of the delivery is stored."""
    user, number = await connected_user(api, db, graph)
    contact = wa_id()
    good = driver.text(number, wa_id=contact, name="Ida", body="the readable one")
    payload = good
    value = payload["entry"][0]["changes"][0]["value"]
    good_wamid = value["messages"][0]["id"]
    value["messages"].insert(0, {"from": contact, "id": 12345, "type": "text"})  # id: a number
    value["messages"].append({"from": contact, "type": "text", "text": {"body": "no id"}})
    status = driver.status(number, wamid="wamid.unknown", status="read", recipient_id=contact)
    value["statuses"] = [
        {"id": "wamid.broken", "status": ["read"]},  # status: not a string
        status["entry"][0]["changes"][0]["value"]["statuses"][0],
    ]
    payload["entry"].append("not an entry")
    payload["entry"].append({"id": "1", "changes": [{"field": "messages", "value": {"x": 1}}]})

    resp = await driver.post(payload)
    assert resp.status == 200, resp.body
    assert resp.body == {"received": 2, "stored": 2, "duplicates": 0, "ignored": 5}
    assert await inbound_jobs(db, f"message:{good_wamid}") == 1
    assert await inbound_jobs(db, "status:wamid.unknown:read") == 1

    async def stored() -> list[dict[str, Any]] | None:
        found = await user.get("/api/memories", params={"search": "Ida"})
        for memory in found.body["memories"]:
            if (memory["metadata"] or {}).get("waId") == contact:
                return await thread_messages(user, memory["id"])
        return None

    messages = await eventually(stored)
    assert [m["content"] for m in messages] == ["the readable one"]
