"""Image thumbnails with Pillow: a JPEG at most `EDGE` px on its longer side, stored beside
the original (``<key>.thumb.jpg``), and the original's dimensions."""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from memoryd.bridges.blobs import BlobStore

log = logging.getLogger("memoryd.files")

EDGE = 320
MAX_PIXELS = 60_000_000  # a bigger image is a decompression bomb, not a photo


@dataclass(frozen=True)
class Thumbnail:
    key: str
    content_type: str
    width: int  # of the original
    height: int


def _render(source: IO[bytes]) -> tuple[bytes, int, int]:
    from PIL import Image, ImageOps

    with Image.open(source) as image:
        if image.width * image.height > MAX_PIXELS:
            raise ValueError(f"{image.width}x{image.height} is too many pixels")
        upright = ImageOps.exif_transpose(image)
        width, height = upright.size
        upright.thumbnail((EDGE, EDGE))
        if upright.mode not in ("RGB", "L"):
            upright = upright.convert("RGB")
        out = io.BytesIO()
        upright.save(out, "JPEG", quality=80, optimize=True)
        return out.getvalue(), width, height


async def make(store: BlobStore, key: str) -> Thumbnail | None:
    """A thumbnail of the image at ``key``, or None when Pillow cannot read it (HEIC
    without a plugin, a broken file): the upload stays, without a thumbnail."""
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        async for chunk in store.open(key):
            spool.write(chunk)
        spool.seek(0)
        try:
            data, width, height = await asyncio.to_thread(_render, spool)
        except Exception as exc:  # Pillow raises many kinds for bad input
            log.info("no thumbnail", extra={"key": key, "reason": repr(exc)[:200]})
            return None

    async def one() -> AsyncIterator[bytes]:
        yield data

    thumb_key = f"{key}.thumb.jpg"
    await store.put_stream(thumb_key, one())
    return Thumbnail(thumb_key, "image/jpeg", width, height)
