"""Upload and download throughput of one big file through ``/api/files``, and the server's
RSS while it flows (it must stay flat: the body is streamed to the blob store and back,
never held whole).

The client streams too: the file is generated chunk by chunk (a PDF header, then a
random MiB repeated) and hashed on the way; the download is hashed and compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import MultipartWriter
from aiohttp.payload import AsyncIterablePayload

from loadtests.bench.common import Account, ServerProcess

MIB = 1024 * 1024
_HEAD = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"


class _Sampler:
    """The server's RSS every 20 ms while a transfer runs."""

    def __init__(self, server: ServerProcess) -> None:
        assert server.stats is not None
        self.stats = server.stats
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.samples.append(self.stats.rss_bytes())

    async def _run(self) -> None:
        while True:
            self.samples.append(self.stats.rss_bytes())
            await asyncio.sleep(0.02)


async def _body(size: int, digest: Any) -> AsyncIterator[bytes]:
    block = os.urandom(MIB)
    first = _HEAD + block[len(_HEAD) :]
    sent = 0
    while sent < size:
        chunk = (first if sent == 0 else block)[: size - sent]
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


@contextlib.asynccontextmanager
async def blob_backend(name: str) -> AsyncIterator[dict[str, str]]:
    """The server's environment for a blob store: ``local`` (its data dir), or ``s3``: a
    bucket on moto's server mode in this process (the S3 wire protocol on a local port;
    its speed is moto's, not S3's: the figure to read is the server's RSS)."""
    if name == "local":
        yield {}
        return
    if name != "s3":
        raise SystemExit(f"unknown blob backend {name!r}")
    from aiobotocore.session import get_session
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    url = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    try:
        async with get_session().create_client(
            "s3", region_name="us-east-1", endpoint_url=url, **keys
        ) as s3:
            await s3.create_bucket(Bucket="memoryd-bench")
        yield {
            "MEMORYD_STORAGE_BACKEND": "s3",
            "MEMORYD_S3_BUCKET": "memoryd-bench",
            "MEMORYD_S3_ENDPOINT_URL": url,
            "MEMORYD_S3_ACCESS_KEY_ID": "bench",
            "MEMORYD_S3_SECRET_ACCESS_KEY": "bench",
        }
    finally:
        moto.stop()


def _mib(n: float) -> float:
    return round(n / MIB, 1)


async def run(
    server: ServerProcess, account: Account, *, size_mib: int, log: Callable[..., None]
) -> dict[str, Any]:
    assert server.stats is not None
    size = size_mib * MIB
    headers = {"Authorization": f"Bearer {account.token}"}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.sleep(0.5)
        rss_before = server.stats.rss_bytes()
        sent_digest = hashlib.sha256()
        writer = MultipartWriter("form-data")
        part = writer.append_payload(AsyncIterablePayload(_body(size, sent_digest)))
        part.set_content_disposition("form-data", name="file", filename="bench.pdf")
        async with _Sampler(server) as up:
            started = time.perf_counter()
            async with http.post(server.url + "/api/files", data=writer, headers=headers) as r:
                body = await r.json()
                assert r.status == 201, body
            up_seconds = time.perf_counter() - started
        f = body["file"]
        assert f["fileSize"] == size and f["sha256"] == sent_digest.hexdigest(), f
        got = hashlib.sha256()
        received = 0
        async with _Sampler(server) as down:
            started = time.perf_counter()
            async with http.get(server.url + f["url"], headers=headers) as r:
                assert r.status == 200
                async for chunk in r.content.iter_chunked(256 * 1024):
                    got.update(chunk)
                    received += len(chunk)
            down_seconds = time.perf_counter() - started
        assert received == size and got.hexdigest() == f["sha256"]
        async with http.delete(server.url + f"/api/files/{f['id']}", headers=headers) as r:
            assert r.status == 204
    result = {
        "size_mib": size_mib,
        "upload_mib_per_s": round(size_mib / up_seconds, 1),
        "download_mib_per_s": round(size_mib / down_seconds, 1),
        "upload_seconds": round(up_seconds, 2),
        "download_seconds": round(down_seconds, 2),
        "rss_mib": {
            "before": _mib(rss_before),
            "upload_peak": _mib(max(up.samples)),
            "download_peak": _mib(max(down.samples)),
            "after": _mib(down.samples[-1]),
        },
        "rss_growth_mib": _mib(max(*up.samples, *down.samples) - rss_before),
        "samples": len(up.samples) + len(down.samples),
    }
    log(
        f"  {size_mib} MiB: upload {result['upload_mib_per_s']} MiB/s, download "
        f"{result['download_mib_per_s']} MiB/s, RSS {result['rss_mib']}"
    )
    return result
