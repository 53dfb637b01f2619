"""The blob store interface: stream in, stream out (with a byte range), delete, presign.

Keys are relative paths such as ``files/<user>/<file>``; a backend maps them to a file
under its directory or an object in its bucket. Contents are never held whole in memory:
`put_stream` takes an async iterator of chunks and `open` yields chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

Chunks = AsyncIterable[bytes]
READ_CHUNK = 256 * 1024


class BlobError(Exception):
    """The backend failed (I/O error, S3 error); the message is safe to log."""


class BlobMissing(BlobError):
    """No blob under that key."""


@dataclass(frozen=True)
class Stored:
    size: int
    sha256: str  # hex digest of the whole content


class BlobStore(Protocol):
    name: str  # stored in ``files.storage_provider``: "local" or "s3"

    async def put_stream(self, key: str, chunks: Chunks) -> Stored:
        """Store ``chunks`` under ``key``, whole or not at all (a failure leaves nothing).

        An exception raised by the iterator (a limit, a broken upload) propagates after
        the partial content is discarded."""
        ...

    def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes ``start..end`` (inclusive; ``end=None``: to the end) of a blob.

        Raises `BlobMissing` (on the first iteration) when there is no such blob."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        ...

    async def presigned_url(
        self, key: str, *, filename: str, content_type: str, disposition: str, expires: int
    ) -> str | None:
        """A time-limited download URL, or None when the backend cannot make one."""
        ...

    async def aclose(self) -> None: ...


class Digest:
    """Counts and hashes chunks on their way into a backend."""

    def __init__(self) -> None:
        self.size = 0
        self._sha = hashlib.sha256()

    def add(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        self._sha.update(chunk)
        return chunk

    def stored(self) -> Stored:
        return Stored(self.size, self._sha.hexdigest())
