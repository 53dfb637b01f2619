"""Blobs as objects in an S3-compatible bucket, through aiobotocore (an optional extra).

Uploads stream as multipart uploads of `PART_SIZE` parts (S3's minimum is 5 MiB for every
part but the last), so a big file never sits whole in memory; a small one is one
``PutObject``. A failed upload is aborted, leaving nothing behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from memoryd.bridges.blobs.base import READ_CHUNK, BlobError, BlobMissing, Chunks, Digest, Stored

PART_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class S3Config:
    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None  # None: AWS itself
    access_key_id: str | None = None  # None: botocore's usual credential chain
    secret_access_key: str | None = None
    presign_expires: int = 0  # > 0: downloads redirect to a URL valid this many seconds


class S3BlobStore:
    name = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def start(self) -> S3BlobStore:
        try:
            from aiobotocore.session import get_session
        except ImportError:  # pragma: no cover - depends on the install
            needs = "the s3 backend needs the s3 extra: pip install 'memoryd[s3]'"
            raise BlobError(needs) from None
        c = self.config
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=c.region,
                endpoint_url=c.endpoint_url,
                aws_access_key_id=c.access_key_id,
                aws_secret_access_key=c.secret_access_key,
            )
        )
        return self

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def put_stream(self, key: str, chunks: Chunks) -> Stored:
        digest = Digest()
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        bucket = self.config.bucket
        try:
            async for chunk in chunks:
                buffer += digest.add(chunk)
                if len(buffer) >= PART_SIZE:
                    if upload_id is None:
                        started = await self._client.create_multipart_upload(Bucket=bucket, Key=key)
                        upload_id = started["UploadId"]
                    parts.append(await self._part(key, upload_id, len(parts) + 1, buffer))
                    buffer = bytearray()
            if upload_id is None:
                await self._client.put_object(Bucket=bucket, Key=key, Body=bytes(buffer))
            else:
                if buffer:
                    parts.append(await self._part(key, upload_id, len(parts) + 1, buffer))
                await self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await self._client.abort_multipart_upload(
                        Bucket=bucket, Key=key, UploadId=upload_id
                    )
            raise
        return digest.stored()

    async def _part(self, key: str, upload_id: str, number: int, body: bytearray) -> dict[str, Any]:
        got = await self._client.upload_part(
            Bucket=self.config.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(body),
        )
        return {"ETag": got["ETag"], "PartNumber": number}

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        from botocore.exceptions import ClientError

        params: dict[str, Any] = {"Bucket": self.config.bucket, "Key": key}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            got = await self._client.get_object(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobMissing(key) from None
            raise BlobError(f"S3 get_object failed: {exc}") from None
        async with got["Body"] as body:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.config.bucket, Key=key)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, disposition: str, expires: int
    ) -> str | None:
        if expires <= 0:
            return None
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.config.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": disposition,
            },
            ExpiresIn=expires,
        )
        return url
