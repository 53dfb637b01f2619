"""The blob stores behind one interface: the same contract for the local directory and
S3 (moto's server mode: a real S3 wire protocol on a local port), and a whole server
storing uploads in S3, with presigned download URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from memoryd.bridges.blobs import BlobMissing, BlobStore, LocalBlobStore
from memoryd.bridges.blobs.base import BlobError
from memoryd.bridges.blobs.s3 import PART_SIZE, S3BlobStore, S3Config
from tests.conftest import StartServer
from tests.files.conftest import PDF_HEAD, upload
from tests.helpers import Api

BUCKET = "memoryd-test"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _config(moto_url: str, **extra: Any) -> S3Config:
    return S3Config(
        bucket=BUCKET,
        region="us-east-1",
        endpoint_url=moto_url,
        access_key_id="testing",
        secret_access_key="testing",
        **extra,
    )


@pytest_asyncio.fixture(scope="module")
async def s3_store(moto_url: str) -> AsyncIterator[S3BlobStore]:
    store = await S3BlobStore(_config(moto_url, presign_expires=60)).start()
    await store._client.create_bucket(Bucket=BUCKET)
    yield store
    await store.aclose()


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, s3_store: S3BlobStore) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path)
    return s3_store


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _read(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in store.open(key, start, end)])


async def test_put_open_range_delete(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    stored = await store.put_stream("files/u/one", _chunks(data))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await _read(store, "files/u/one") == data
    assert await _read(store, "files/u/one", 5, 99) == data[5:100]
    assert await _read(store, "files/u/one", len(data) - 10) == data[-10:]
    await store.delete("files/u/one")
    with pytest.raises(BlobMissing):
        await _read(store, "files/u/one")
    await store.delete("files/u/one")  # twice is fine


async def test_a_big_upload_goes_in_parts(store: BlobStore) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)  # S3: a multipart upload of three parts
    stored = await store.put_stream("files/u/big", _chunks(data))
    assert stored.size == len(data)
    assert hashlib.sha256(await _read(store, "files/u/big")).hexdigest() == stored.sha256


async def test_a_failed_upload_leaves_nothing(store: BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1)  # S3: the first part is already uploaded
        raise ValueError("client went away")

    with pytest.raises(ValueError):
        await store.put_stream("files/u/broken", broken())
    with pytest.raises(BlobMissing):
        await _read(store, "files/u/broken")


async def test_s3_aborts_the_multipart_upload(s3_store: S3BlobStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART_SIZE + 1)
        raise ValueError("client went away")

    with pytest.raises(ValueError):
        await s3_store.put_stream("files/u/aborted", broken())
    pending = await s3_store._client.list_multipart_uploads(Bucket=BUCKET)
    assert not [u for u in pending.get("Uploads", []) if u["Key"] == "files/u/aborted"]


async def test_local_keys_cannot_leave_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    for key in ("../outside", "files/../../outside", ""):
        with pytest.raises(BlobError):
            await store.put_stream(key, _chunks(b"x"))


async def test_presigned_urls_download_directly(
    s3_store: S3BlobStore, http: aiohttp.ClientSession
) -> None:
    await s3_store.put_stream("files/u/signed", _chunks(b"signed bytes"))
    url = await s3_store.presigned_url(
        "files/u/signed",
        filename="a.txt",
        content_type="text/plain; charset=utf-8",
        disposition='attachment; filename="a.txt"',
        expires=60,
    )
    assert url is not None and "Signature" in url
    async with http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == b"signed bytes"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="a.txt"'
        assert resp.headers["Content-Type"].startswith("text/plain")
    assert (
        await LocalBlobStore(Path("/tmp")).presigned_url(
            "x", filename="a", content_type="b", disposition="c", expires=60
        )
        is None
    )


@pytest.mark.storage
async def test_a_server_on_s3(
    start_server: StartServer,
    moto_url: str,
    s3_store: S3BlobStore,
    http: aiohttp.ClientSession,
) -> None:
    s3 = {"storage_backend": "s3", "s3_bucket": BUCKET, "s3_endpoint_url": moto_url,
          "s3_access_key_id": "testing", "s3_secret_access_key": "testing"}  # fmt: skip
    node = await start_server(**s3)
    me = await Api(http, node.url).register()
    body = PDF_HEAD + os.urandom(100_000)
    f = (await upload(me, body, "on-s3.pdf")).body["file"]
    key = f"files/{me.user['id']}/{f['id']}"  # type: ignore[attr-defined]
    assert await _read(s3_store, key) == body
    got = await me.get(f["url"], headers={"Range": "bytes=0-9"})
    assert got.status == 206

    signed = await start_server(**s3, s3_presign_seconds=120)
    async with http.get(
        signed.url + f["url"],
        headers={"Authorization": f"Bearer {me.token}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 307
        location = resp.headers["Location"]
    assert location.startswith(moto_url)
    async with http.get(location) as resp:
        assert await resp.read() == body
        assert resp.headers["Content-Disposition"].startswith("attachment;")

    assert (await me.delete(f["url"].removesuffix("/content"))).status == 204
    for _ in range(100):
        try:
            await _read(s3_store, key)
        except BlobMissing:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the S3 object was not purged")
