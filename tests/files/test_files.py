"""/api/files: streamed uploads with sniffed types and limits, safe downloads (Range,
ETag, Content-Disposition), isolation, deletes that remove the contents, attachments."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.server.keys import SETTINGS
from memoryd.storage.database import Database
from tests.conftest import RunningServer, StartServer
from tests.files.conftest import PDF_HEAD, png, upload
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="module")
async def small(start_server: StartServer) -> RunningServer:
    """A server with small limits: 64 KiB documents, 32 KiB images, 200 KiB quota."""
    return await start_server(
        files_max_document_bytes=64 * 1024,
        files_max_image_bytes=32 * 1024,
        files_quota_bytes=200 * 1024,
    )


async def _user(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    return await Api(http, server.url).register()


async def _raw(client: Api, path: str, **headers: str) -> tuple[int, bytes, Any]:
    async with client.session.get(
        client.url + path, headers={"Authorization": f"Bearer {client.token}", **headers}
    ) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_upload_sniffs_the_type_and_download_serves_it_safely(api: Api) -> None:
    me = await api.register()
    body = b"<html><script>alert(1)</script></html>\n" * 10
    resp = await upload(me, body, "../../evil.html", content_type="text/html")
    assert resp.status == 201, resp.body
    f = resp.body["file"]
    assert f["fileType"] == "text/plain; charset=utf-8"  # never stored as HTML
    assert f["kind"] == "document"
    assert f["fileSize"] == len(body)
    assert f["sha256"] == hashlib.sha256(body).hexdigest()
    assert f["originalFilename"] == "evil.html.txt"  # no path, the sniffed type's extension
    assert f["url"] == f"/api/files/{f['id']}/content"

    got = await me.get(f"/api/files/{f['id']}")
    assert got.status == 200 and got.body["file"] == f

    status, data, headers = await _raw(me, f["url"])
    assert status == 200 and data == body
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Content-Disposition"].startswith("attachment;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]
    assert headers["ETag"] == f'"{f["sha256"]}"'


async def test_range_and_etag(api: Api) -> None:
    me = await api.register()
    body = PDF_HEAD + bytes(range(256)) * 40
    f = (await upload(me, body, "report.pdf")).body["file"]
    assert f["fileType"] == "application/pdf"
    status, data, headers = await _raw(me, f["url"], Range="bytes=10-19")
    assert status == 206 and data == body[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(body)}"
    status, data, _ = await _raw(me, f["url"], Range="bytes=-5")
    assert status == 206 and data == body[-5:]
    status, data, _ = await _raw(me, f["url"], Range="bytes=100-")
    assert status == 206 and data == body[100:]
    status, _, headers = await _raw(me, f["url"], Range=f"bytes={len(body)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(body)}"
    status, data, headers = await _raw(me, f["url"], **{"If-None-Match": f'"{f["sha256"]}"'})
    assert status == 304 and data == b""
    status, data, _ = await _raw(me, f["url"], Range="bytes=0-3", **{"If-Range": '"stale"'})
    assert status == 200 and data == body  # If-Range that does not match: the whole file


async def test_unicode_names_are_kept_in_filename_star(api: Api) -> None:
    me = await api.register()
    f = (await upload(me, PDF_HEAD + b"x" * 100, 'Relatório "final".pdf')).body["file"]
    assert f["originalFilename"] == "Relatório _final_.pdf"
    _, _, headers = await _raw(me, f["url"])
    disposition = headers["Content-Disposition"]
    assert 'filename="Relat_rio _final_.pdf"' in disposition
    assert "filename*=UTF-8''Relat%C3%B3rio%20_final_.pdf" in disposition


async def test_images_are_inline_unless_download_is_asked(api: Api) -> None:
    me = await api.register()
    f = (await upload(me, png(), "photo.png", content_type="image/png")).body["file"]
    assert f["kind"] == "image" and f["fileType"] == "image/png"
    _, _, headers = await _raw(me, f["url"])
    assert headers["Content-Disposition"].startswith("inline;")
    _, _, headers = await _raw(me, f["url"] + "?download=1")
    assert headers["Content-Disposition"].startswith("attachment;")


async def test_bad_uploads(small: RunningServer, http: aiohttp.ClientSession) -> None:
    me = await _user(small, http)
    empty = await upload(me, b"", "empty.txt")
    assert (empty.status, empty.error_code) == (400, "empty_file")
    exe = await upload(me, b"MZ\x90\x00" + b"\x00" * 600, "tool.pdf")
    assert (exe.status, exe.error_code) == (415, "unsupported_file_type")
    binary = await upload(me, bytes(range(256)) * 8, "blob.bin")
    assert (binary.status, binary.error_code) == (415, "unsupported_file_type")
    big = await upload(me, b"a" * (64 * 1024 + 1), "big.txt")
    assert (big.status, big.error_code) == (413, "file_too_large")
    assert big.body["error"]["details"]["kind"] == "document"
    big_image = await upload(me, png(400, 400, "blue") + b"\x00" * 40_000, "big.png")
    assert (big_image.status, big_image.error_code) == (413, "file_too_large")
    no_file = await me.post("/api/files", data={"other": "x"})
    assert no_file.status in (400, 415)
    json_body = await me.post("/api/files", json={"file": "x"})
    assert (json_body.status, json_body.error_code) == (415, "unsupported_media_type")
    assert (await me.get("/api/files/" + str(uuid.uuid4()))).status == 404
    # nothing of the refused uploads was kept
    root = Path(small.app[SETTINGS].data_dir) / "files" / me.user["id"]  # type: ignore[attr-defined]
    assert not root.exists() or not any(root.iterdir())


async def test_a_truncated_multipart_body_is_a_400_and_leaves_nothing(
    small: RunningServer, http: aiohttp.ClientSession
) -> None:
    me = await _user(small, http)
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"'
        "\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    body = head + b"hello " * 1000  # no closing boundary: the client stopped mid-file
    resp = await me.post(
        "/api/files",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert (resp.status, resp.error_code) == (400, "bad_multipart"), resp.body
    root = Path(small.app[SETTINGS].data_dir) / "files" / me.user["id"]  # type: ignore[attr-defined]
    assert not root.exists() or not any(root.iterdir())


async def test_the_quota_is_per_user(small: RunningServer, http: aiohttp.ClientSession) -> None:
    me, other = await _user(small, http), await _user(small, http)
    for _ in range(3):
        assert (await upload(me, b"q" * 60_000, "part.txt")).status == 201
    over = await upload(me, b"q" * 60_000, "part.txt")
    assert (over.status, over.error_code) == (413, "quota_exceeded")
    assert over.body["error"]["details"]["quotaBytes"] == 200 * 1024
    assert (await upload(other, b"q" * 60_000, "part.txt")).status == 201


async def test_uploads_are_rate_limited(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    from memoryd.config import RateLimit

    limited = await start_server(rate_limit_upload=RateLimit(2, 3600))
    me = await _user(limited, http)
    assert (await upload(me, b"one", "1.txt")).status == 201
    assert (await upload(me, b"two", "2.txt")).status == 201
    third = await upload(me, b"three", "3.txt")
    assert (third.status, third.error_code) == (429, "rate_limited")
    assert third.body["error"]["details"]["limit"] == "upload"
    assert (await me.get("/api/memories")).status == 200  # only uploads are limited


async def test_another_users_file_is_a_404(api: Api) -> None:
    me, other = await api.register(), await api.register()
    f = (await upload(me, b"private notes", "mine.txt")).body["file"]
    assert (await other.get(f"/api/files/{f['id']}")).status == 404
    status, _, _ = await _raw(other, f["url"])
    assert status == 404
    assert (await other.delete(f"/api/files/{f['id']}")).status == 404
    assert (await me.get(f"/api/files/{f['id']}")).status == 200
    assert (await api.as_user("").get(f"/api/files/{f['id']}")).status == 401


async def _gone(path: Path) -> None:
    for _ in range(100):
        if not await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} is still there")


async def test_delete_removes_the_contents_by_a_job(server: RunningServer, api: Api) -> None:
    me = await api.register()
    f = (await upload(me, b"short-lived", "tmp.txt")).body["file"]
    blob = Path(server.app[SETTINGS].data_dir) / "files" / me.user["id"] / f["id"]  # type: ignore[attr-defined]
    assert blob.read_bytes() == b"short-lived"
    assert (await me.delete(f"/api/files/{f['id']}")).status == 204
    assert (await me.get(f"/api/files/{f['id']}")).status == 404
    await _gone(blob)


# -- attachments ---------------------------------------------------------------------------


async def _memory(client: Api) -> str:
    resp = await client.post("/api/memories", json={"title": "with files"})
    assert resp.status == 201, resp.body
    return resp.body["memory"]["id"]  # type: ignore[no-any-return]


async def test_attachments_carry_their_metadata_and_go_with_the_message(
    server: RunningServer, api: Api, db: Database
) -> None:
    me = await promote(await api.register(), db)  # plain users may not delete messages
    memory = await _memory(me)
    photo = (await upload(me, png(), "p.png")).body["file"]
    doc = (await upload(me, PDF_HEAD + b"1" * 50, "d.pdf")).body["file"]
    sent = await me.post(
        f"/api/memories/{memory}/messages",
        json={
            "content": "see these",
            "messageType": "image",
            "attachments": [doc["id"], photo["id"]],
        },
    )
    assert sent.status == 201, sent.body
    message = sent.body["message"]
    assert message["attachments"] == [doc["id"], photo["id"]]
    assert [f["id"] for f in message["files"]] == [doc["id"], photo["id"]]
    assert message["files"][1]["fileType"] == "image/png"
    assert message["files"][1]["messageId"] == message["id"]
    page = await me.get(f"/api/memories/{memory}/messages")
    assert page.body["messages"][0]["files"] == message["files"]
    # attached: the file is deleted with its message, not on its own
    refused = await me.delete(f"/api/files/{doc['id']}")
    assert (refused.status, refused.error_code) == (409, "file_attached")
    blob = Path(server.app[SETTINGS].data_dir) / "files" / me.user["id"] / doc["id"]  # type: ignore[attr-defined]
    assert blob.exists()
    assert (await me.delete(f"/api/memories/{memory}/messages/{message['id']}")).status == 204
    assert (await me.get(f"/api/files/{doc['id']}")).status == 404
    await _gone(blob)


async def test_deleting_a_memory_removes_its_files(
    server: RunningServer, api: Api, db: Database
) -> None:
    me = await promote(await api.register(), db)
    memory = await _memory(me)
    f = (await upload(me, b"in a memory", "m.txt")).body["file"]
    sent = await me.post(
        f"/api/memories/{memory}/messages", json={"content": "x", "attachments": [f["id"]]}
    )
    assert sent.status == 201
    blob = Path(server.app[SETTINGS].data_dir) / "files" / me.user["id"] / f["id"]  # type: ignore[attr-defined]
    assert (await me.delete(f"/api/memories/{memory}")).status in (200, 204)
    await _gone(blob)


async def test_attachments_must_be_the_senders_unattached_files(api: Api) -> None:
    me, other = await api.register(), await api.register()
    memory = await _memory(me)
    theirs = (await upload(other, b"not yours", "t.txt")).body["file"]
    mine = (await upload(me, b"mine", "m.txt")).body["file"]
    for attachments in ([theirs["id"]], [str(uuid.uuid4())], [mine["id"], theirs["id"]]):
        resp = await me.post(
            f"/api/memories/{memory}/messages",
            json={"content": "x", "attachments": attachments},
        )
        assert (resp.status, resp.error_code) == (400, "validation_failed"), resp.body
        assert all(d["field"].startswith("attachments") for d in resp.body["error"]["details"])
    # nothing was sent, and my file is still unattached
    assert (await me.get(f"/api/memories/{memory}/messages")).body["messages"] == []
    assert (await me.get(f"/api/files/{mine['id']}")).body["file"]["messageId"] is None
    ok = await me.post(
        f"/api/memories/{memory}/messages", json={"content": "x", "attachments": [mine["id"]]}
    )
    assert ok.status == 201
    again = await me.post(
        f"/api/memories/{memory}/messages", json={"content": "y", "attachments": [mine["id"]]}
    )
    assert (again.status, again.error_code) == (400, "validation_failed")
    other_mine = (await upload(me, b"twice", "2.txt")).body["file"]
    twice = await me.post(
        f"/api/memories/{memory}/messages",
        json={"content": "z", "attachments": [other_mine["id"], other_mine["id"]]},
    )
    assert (twice.status, twice.error_code) == (400, "validation_failed")
    assert twice.body["error"]["details"] == [
        {"field": "attachments", "message": "a file may be attached once"}
    ]
    assert (await other.get(f"/api/files/{theirs['id']}")).body["file"]["messageId"] is None


async def test_images_get_a_thumbnail_and_their_dimensions(server: RunningServer, api: Api) -> None:
    import io

    from PIL import Image

    me = await api.register()
    f = (await upload(me, png(640, 480, "green"), "big.png")).body["file"]
    assert f["metadata"] == {"width": 640, "height": 480}
    assert f["thumbnailUrl"] == f"/api/files/{f['id']}/thumbnail"
    status, data, headers = await _raw(me, f["thumbnailUrl"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(data)) as thumb:
        assert thumb.size == (320, 240)
    other = await api.register()
    assert (await _raw(other, f["thumbnailUrl"]))[0] == 404
    text = (await upload(me, b"no picture", "t.txt")).body["file"]
    assert text["thumbnailUrl"] is None
    assert (await _raw(me, f"/api/files/{text['id']}/thumbnail"))[0] == 404
    broken = (await upload(me, png()[:60], "cut.png")).body["file"]  # a PNG cut short
    assert broken["kind"] == "image" and broken["thumbnailUrl"] is None

    root = Path(server.app[SETTINGS].data_dir) / "files" / me.user["id"]  # type: ignore[attr-defined]
    assert (root / f"{f['id']}.thumb.jpg").exists()
    assert (await me.delete(f"/api/files/{f['id']}")).status == 204
    await _gone(root / f["id"])
    await _gone(root / f"{f['id']}.thumb.jpg")


async def test_concurrent_uploads_cannot_overshoot_the_quota(
    small: RunningServer, http: aiohttp.ClientSession
) -> None:
    me = await _user(small, http)
    results = await asyncio.gather(*(upload(me, b"c" * 60_000, f"{i}.txt") for i in range(5)))
    statuses = sorted(r.status for r in results)
    assert statuses == [201, 201, 201, 413, 413], [r.body for r in results]  # 200 KiB quota
    assert {r.error_code for r in results if r.status == 413} == {"quota_exceeded"}


async def test_a_stored_type_we_would_not_accept_is_served_as_octet_stream(
    api: Api, db: Database
) -> None:
    """Rows written before sniffing (WhatsApp media took Meta's mime type) may say
    anything; such a type is never served, not even as an attachment."""
    me = await api.register()
    f = (await upload(me, b"<script>alert(1)</script>", "x.txt")).body["file"]
    await db.execute(
        "UPDATE files SET file_type = 'text/html', kind = 'image' WHERE id = $1",
        uuid.UUID(f["id"]),
    )
    status, _, headers = await _raw(me, f["url"])
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")
