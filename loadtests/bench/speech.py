"""Word error rate of each local recognizer on espeak-ng clips (the tests' voice), and
how long each takes: the evidence behind the default (docs/benchmarks.md).

    python -m loadtests.bench.speech          # pocketsphinx, and faster-whisper if installed

Each clip is spoken by espeak-ng (en-us, 130 words/min), encoded as Opus in Ogg (what
WhatsApp sends) and decoded by ffmpeg to 16 kHz mono, as the server does.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memoryd.bridges.speech.audio import to_wav
from memoryd.bridges.speech.base import Audio, Recognizer

CLIPS = (
    "one two three four five",
    "remember to buy milk and bread tomorrow morning",
    "call my mother on sunday afternoon",
    "the meeting with the bank is at nine o'clock",
    "open the door and turn on the lights",
    "my flight to lisbon leaves on friday",
    "please send the invoice to the accountant",
    "the weather is nice today",
)


_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _words(text: str) -> list[str]:
    """Lower-case words, digits spelt out ("1" and "one" are the same word here)."""
    found = re.findall(r"[a-z']+|[0-9]", text.lower())
    return [_DIGITS[int(w)] if w.isdigit() else w for w in found]


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words): Levenshtein distance over words."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def _speak(tmp: Path, i: int, text: str) -> tuple[Path, Path]:
    wav, ogg, pcm = (tmp / f"{i}.{ext}" for ext in ("wav", "ogg", "16k.wav"))
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(wav), text], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1",
                    "-c:a", "libopus", "-b:a", "32k", str(ogg)], check=True)  # fmt: skip
    return ogg, pcm


def _recognizers() -> list[Recognizer]:
    from memoryd.bridges.speech.local import PocketSphinxRecognizer

    found: list[Recognizer] = [PocketSphinxRecognizer()]
    try:
        from memoryd.bridges.speech.whisper import WhisperRecognizer

        found.append(WhisperRecognizer())
    except Exception as exc:
        print(f"faster-whisper skipped: {exc}", file=sys.stderr)
    return found


async def main() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        audios = []
        for i, text in enumerate(CLIPS):
            ogg, pcm = await asyncio.to_thread(_speak, Path(tmp), i, text)
            duration = await to_wav(ogg, pcm)
            audios.append((text, Audio(ogg, "audio/ogg", pcm, duration, "en")))
        for rec in _recognizers():
            edits = words = 0
            seconds = 0.0
            clips = []
            await rec.transcribe(audios[0][1])  # load the model first
            for text, audio in audios:
                started = time.perf_counter()
                got = await rec.transcribe(audio)
                took = time.perf_counter() - started
                e, n = wer(text, got.text)
                edits, words, seconds = edits + e, words + n, seconds + took
                clips.append({"reference": text, "heard": got.text, "wer": round(e / n, 3),
                              "seconds": round(took, 2)})  # fmt: skip
            results[rec.name] = {
                "wer": round(edits / words, 3),
                "seconds_per_clip": round(seconds / len(audios), 2),
                "audio_seconds_per_clip": round(
                    sum(a.duration for _, a in audios) / len(audios), 2
                ),
                "clips": clips,
            }
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    print(json.dumps(out, indent=2))
    for name, r in out.items():
        print(f"{name}: WER {100 * r['wer']:.1f}%, {r['seconds_per_clip']} s per clip")
