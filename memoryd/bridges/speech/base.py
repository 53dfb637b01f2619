"""The transcription interface: decoded audio in, a transcript (with segments) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SpeechError(Exception):
    """A recognizer failed. ``permanent``: retrying the same audio cannot help."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float = 0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Segment:
    text: str
    start: float  # seconds
    end: float
    confidence: float  # 0..1


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    confidence: float  # 0..1, the duration-weighted mean of the segments'
    engine: str  # which recognizer made it, e.g. "pocketsphinx-5.1 en-us"
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Audio:
    """A voice note: the upload as it came and its decoded 16 kHz mono 16-bit PCM WAV."""

    original: Path
    content_type: str
    wav: Path
    duration: float  # seconds, from the decoded samples
    language: str | None = None  # the caller's hint, ISO 639-1 ("en")


class Recognizer(Protocol):
    name: str

    async def transcribe(self, audio: Audio) -> Transcript: ...

    async def aclose(self) -> None: ...


def weighted_confidence(segments: list[Segment]) -> float:
    total = sum(max(s.end - s.start, 0.0) for s in segments)
    if not segments:
        return 0.0
    if total <= 0:
        return sum(s.confidence for s in segments) / len(segments)
    return sum(s.confidence * max(s.end - s.start, 0.0) for s in segments) / total
