"""The offline default: pocketsphinx with the US English model its wheel ships.

Light (a ~30 MB wheel, no download at run time) and always available, but its accuracy on
anything but clear, slow speech is poor: see docs/benchmarks.md for its word error rate
next to faster-whisper's (the ``whisper`` provider). One decode runs at a time per node:
it is CPU-bound and runs in a thread.
"""

from __future__ import annotations

import asyncio
import math
from importlib.metadata import version
from typing import Any

from memoryd.bridges.speech.audio import RATE, read_pcm
from memoryd.bridges.speech.base import Audio, Segment, SpeechError, Transcript, weighted_confidence

_FRAMES_PER_SECOND = 100  # pocketsphinx's default frame rate
_FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "<unk>")


class PocketSphinxRecognizer:
    def __init__(self) -> None:
        try:
            self.name = f"pocketsphinx-{version('pocketsphinx')} en-us"
        except Exception:  # pragma: no cover - the package is a dependency
            self.name = "pocketsphinx en-us"
        self._decoder: Any = None
        self._lock = asyncio.Lock()

    async def transcribe(self, audio: Audio) -> Transcript:
        if audio.language and not audio.language.lower().startswith("en"):
            raise SpeechError(
                f"the local recognizer only knows English, not {audio.language!r}; "
                "configure MEMORYD_TRANSCRIPTION_PROVIDER=openai or whisper",
                permanent=True,
            )
        async with self._lock:
            return await asyncio.to_thread(self._run, audio)

    def _run(self, audio: Audio) -> Transcript:
        from pocketsphinx import Decoder

        if self._decoder is None:
            self._decoder = Decoder(samprate=RATE, loglevel="FATAL")
        decoder = self._decoder
        decoder.start_utt()
        for block in read_pcm(audio.wav):
            decoder.process_raw(block, full_utt=False)
        decoder.end_utt()
        hyp = decoder.hyp()
        segments: list[Segment] = []
        for seg in decoder.seg() if hyp is not None else ():
            word = seg.word.split("(")[0]  # "the(2)": the second pronunciation of "the"
            if word in _FILLERS or word.startswith("["):
                continue
            segments.append(
                Segment(
                    text=word,
                    start=seg.start_frame / _FRAMES_PER_SECOND,
                    end=(seg.end_frame + 1) / _FRAMES_PER_SECOND,
                    confidence=_probability(seg.prob),
                )
            )
        text = " ".join(s.text for s in segments)
        return Transcript(
            text=text,
            language="en",
            confidence=weighted_confidence(segments),
            engine=self.name,
            segments=segments,
        )

    async def aclose(self) -> None:
        return None


def _probability(value: float) -> float:
    """pocketsphinx 5 reports a word's posterior as a probability; clamp it to 0..1."""
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))
