"""Files and voice on a node: the blob stores, the recognizer and their job kinds."""

from __future__ import annotations

import contextlib

from memoryd.bridges.blobs import BlobStore, LocalBlobStore
from memoryd.bridges.blobs.s3 import S3BlobStore, S3Config
from memoryd.bridges.speech import recognizer_for
from memoryd.handlers import files, voice
from memoryd.handlers.context import Services
from memoryd.server.jobs import JobRunner
from memoryd.storage.files import PURGE, TRANSCRIBE


async def open_stores(services: Services) -> None:
    """Open the blob stores and the recognizer. The local store is always there: rows
    written before a switch to S3 (and WhatsApp media) stay readable."""
    settings = services.settings
    stores: dict[str, BlobStore] = {"local": LocalBlobStore(settings.data_dir)}
    if settings.storage_backend == "s3":
        assert settings.s3_bucket is not None  # Settings.from_env checks it
        stores["s3"] = await S3BlobStore(
            S3Config(
                bucket=settings.s3_bucket,
                region=settings.s3_region,
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=settings.s3_secret_access_key,
                presign_expires=settings.s3_presign_seconds,
            )
        ).start()
    services.blobs = stores
    services.speech = recognizer_for(settings)


def register_jobs(services: Services, jobs: JobRunner) -> None:
    """``files.purge`` and ``voice.transcribe``, run on every node."""
    jobs.register(PURGE, files.purge_handler(services))
    jobs.register(TRANSCRIBE, voice.job_handler(services))


async def close_stores(services: Services) -> None:
    for store in services.blobs.values():
        with contextlib.suppress(Exception):
            await store.aclose()
    if services.speech is not None:
        with contextlib.suppress(Exception):
            await services.speech.aclose()
