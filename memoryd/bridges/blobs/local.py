"""Blobs as files under a directory (the data dir by default)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from memoryd.bridges.blobs.base import READ_CHUNK, BlobError, BlobMissing, Chunks, Digest, Stored


class LocalBlobStore:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """The file of ``key``; a key that would leave the root is refused."""
        path = (self.root / key).resolve()
        if not key or path == self.root or not path.is_relative_to(self.root):
            raise BlobError(f"bad blob key {key!r}")
        return path

    async def put_stream(self, key: str, chunks: Chunks) -> Stored:
        path = self.path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        # A temporary name, renamed at the end: the key is whole or absent, never half.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        digest = Digest()
        out = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in chunks:
                await asyncio.to_thread(out.write, digest.add(chunk))
            await asyncio.to_thread(out.close)
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            out.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return digest.stored()

    async def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.path(key)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        try:
            await asyncio.to_thread(f.seek, start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                size = READ_CHUNK if left is None else min(READ_CHUNK, left)
                chunk = await asyncio.to_thread(f.read, size)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, disposition: str, expires: int
    ) -> str | None:
        return None  # served by /api/files/{id}/content itself

    async def aclose(self) -> None:
        return None
