"""Audio conversion with ffmpeg (Debian's package): anything it reads (Opus in Ogg from
WhatsApp, Opus in WebM from browsers, MP3, M4A, WAV, FLAC ...) to 16 kHz mono PCM WAV."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

RATE = 16_000
MAX_SECONDS = 3600  # longer audio is cut here: the transcript covers the first hour
_TIMEOUT = 300.0


class Undecodable(Exception):
    """ffmpeg is missing or could not decode the audio; the message says which."""


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


async def to_wav(source: Path, dest: Path) -> float:
    """Decode ``source`` into ``dest``; the duration in seconds, from the samples."""
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        raise Undecodable("ffmpeg is not installed on this node")
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
        "-t", str(MAX_SECONDS), "-vn", "-ac", "1", "-ar", str(RATE),
        "-acodec", "pcm_s16le", "-f", "wav", str(dest),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), _TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Undecodable("ffmpeg took too long") from None
    except BaseException:  # cancelled (shutdown): no ffmpeg is left running behind us
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise Undecodable(f"ffmpeg could not decode it: {last[0][:200]}")
    with wave.open(str(dest), "rb") as w:
        frames = w.getnframes()
    if frames == 0:
        raise Undecodable("it holds no audio")
    return frames / RATE


def read_pcm(wav_path: Path, seconds: float = 1.0) -> Iterator[bytes]:
    """The samples in blocks of ``seconds``, so an hour of audio is never one buffer."""
    with wave.open(str(wav_path), "rb") as w:
        while block := w.readframes(int(RATE * seconds)):
            yield block
