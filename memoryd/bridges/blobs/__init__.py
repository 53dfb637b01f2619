"""Where file contents live: one small interface (`BlobStore`), a local directory by
default and S3-compatible object storage as an option (`blob_store_for`)."""

from __future__ import annotations

from memoryd.bridges.blobs.base import BlobError, BlobMissing, BlobStore, Chunks, Stored
from memoryd.bridges.blobs.local import LocalBlobStore

__all__ = ["BlobError", "BlobMissing", "BlobStore", "Chunks", "LocalBlobStore", "Stored"]
