"""Transcription of voice notes behind one interface (`Recognizer`): the offline
pocketsphinx default, an OpenAI-compatible server, or faster-whisper (optional extra)."""

from __future__ import annotations

from memoryd.bridges.speech.base import Audio, Recognizer, Segment, SpeechError, Transcript
from memoryd.config import Settings

__all__ = ["Audio", "Recognizer", "Segment", "SpeechError", "Transcript", "recognizer_for"]


def recognizer_for(settings: Settings) -> Recognizer:
    """The configured recognizer; ``auto`` is OpenAI when it is configured, else local."""
    choice = settings.transcription_provider
    if choice == "auto":
        configured = settings.openai_api_key or settings.openai_base_url
        choice = "openai" if configured else "local"
    if choice == "openai":
        from memoryd.bridges.speech.openai_speech import OpenAIRecognizer

        return OpenAIRecognizer(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            model=settings.openai_transcription_model,
            timeout=settings.ai_timeout,
            max_retries=settings.ai_max_retries,
        )
    if choice == "whisper":
        from memoryd.bridges.speech.whisper import WhisperRecognizer

        return WhisperRecognizer()
    from memoryd.bridges.speech.local import PocketSphinxRecognizer

    return PocketSphinxRecognizer()
