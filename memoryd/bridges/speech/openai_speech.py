"""OpenAI-compatible ``POST /audio/transcriptions`` through the ``openai`` SDK.

``response_format=verbose_json`` gives segments with ``avg_logprob``; a segment's
confidence is ``exp(avg_logprob)``. OpenAI takes files up to 25 MiB: the upload as it came
when it is a format OpenAI reads and fits, else the decoded WAV when that fits, else the
transcription fails saying so. The SDK retries 429s, 5xx and timeouts with backoff.
"""

from __future__ import annotations

import math
from typing import Any

import openai

from memoryd.bridges.speech.base import Audio, Segment, SpeechError, Transcript, weighted_confidence

MAX_BYTES = 25 * 1024 * 1024
# What /audio/transcriptions reads (OpenAI's reference): flac mp3 mp4 mpeg mpga m4a ogg wav webm.
_ACCEPTED = {
    "audio/flac": "flac", "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/ogg": "ogg",
    "audio/wav": "wav", "audio/webm": "webm", "video/webm": "webm", "video/mp4": "mp4",
}  # fmt: skip
# verbose_json names the language ("english"); the API takes ISO 639-1 codes.
_CODES = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "portuguese": "pt",
    "italian": "it", "dutch": "nl", "polish": "pl", "russian": "ru", "japanese": "ja",
    "chinese": "zh", "korean": "ko", "arabic": "ar", "turkish": "tr", "hindi": "hi",
}  # fmt: skip


class OpenAIRecognizer:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        model: str,
        timeout: float,
        max_retries: int,
    ) -> None:
        self.model = model
        self.name = f"openai {model}"
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused", base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def transcribe(self, audio: Audio) -> Transcript:
        path, fmt = audio.original, _ACCEPTED.get(audio.content_type)
        if fmt is None or path.stat().st_size > MAX_BYTES:
            path, fmt = audio.wav, "wav"
        if path.stat().st_size > MAX_BYTES:
            raise SpeechError(
                "the audio is over the provider's 25 MiB limit, even decoded", permanent=True
            )
        extra: dict[str, Any] = {}
        if audio.language:
            extra["language"] = audio.language
        try:
            with path.open("rb") as f:
                got = await self._client.audio.transcriptions.create(
                    model=self.model,
                    file=(f"audio.{fmt}", f.read()),
                    response_format="verbose_json",
                    **extra,
                )
        except openai.RateLimitError as exc:
            raise SpeechError(f"transcription rate limited: {exc}", retry_after=30) from None
        except openai.APIStatusError as exc:
            permanent = 400 <= exc.status_code < 500 and exc.status_code not in (408, 409)
            message = f"transcription failed: {exc.status_code}"
            raise SpeechError(message, permanent=permanent) from None
        except openai.APIError as exc:
            raise SpeechError(f"transcription failed: {type(exc).__name__}") from None
        segments = [
            Segment(
                text=str(s.text).strip(),
                start=float(s.start),
                end=float(s.end),
                confidence=min(1.0, math.exp(float(s.avg_logprob))),
            )
            for s in (getattr(got, "segments", None) or [])
        ]
        language = str(getattr(got, "language", "") or audio.language or "")
        return Transcript(
            text=str(got.text).strip(),
            language=_CODES.get(language.lower(), language),
            confidence=weighted_confidence(segments),
            engine=self.name,
            segments=segments,
        )

    async def aclose(self) -> None:
        await self._client.close()
