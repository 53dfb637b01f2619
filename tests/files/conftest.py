"""Helpers of the files and voice tests: multipart uploads, images, speech clips."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import Api, Response


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


PDF_HEAD = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"


async def upload(
    client: Api,
    data: bytes,
    filename: str = "notes.txt",
    *,
    field: str = "file",
    content_type: str = "application/octet-stream",
    path: str = "/api/files",
    fields: dict[str, str] | None = None,
    before: bool = True,
) -> Response:
    """POST a multipart form with one file part (and text ``fields`` before or after it)."""
    form = aiohttp.FormData()
    if before:
        for k, v in (fields or {}).items():
            form.add_field(k, v)
    form.add_field(field, data, filename=filename, content_type=content_type)
    if not before:
        for k, v in (fields or {}).items():
            form.add_field(k, v)
    return await client.post(path, data=form)


def require_program(name: str) -> str:
    """The program's path; skipped outside CI when absent, a failure under CI=true."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (apt-get install {name}; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def speak(text: str, dest: Path, *, codec: str = "opus", container: str = "ogg") -> bytes:
    """``text`` spoken by espeak-ng, encoded by ffmpeg (Opus in Ogg as WhatsApp sends it,
    or Opus in WebM as browsers record it)."""
    require_program("espeak-ng")
    require_program("ffmpeg")
    wav = dest.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(wav), text], check=True)
    out = dest.with_suffix(f".{container}")
    args: list[Any] = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1"]
    if codec == "opus":
        args += ["-c:a", "libopus", "-b:a", "32k"]
    subprocess.run([*args, str(out)], check=True)
    return out.read_bytes()
