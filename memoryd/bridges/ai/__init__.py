"""Memo's AI providers: an OpenAI-compatible server, or the local responder by default."""

from __future__ import annotations

from memoryd.bridges.ai.base import (
    LOCAL_MODEL,
    SYSTEM_PROMPT,
    AIError,
    AIProvider,
    Completion,
    Embeddings,
    Passage,
    Prompt,
    Summary,
    Turn,
)
from memoryd.bridges.ai.local import LocalProvider
from memoryd.config import Settings

__all__ = [
    "LOCAL_MODEL",
    "SYSTEM_PROMPT",
    "AIError",
    "AIProvider",
    "Completion",
    "Embeddings",
    "LocalProvider",
    "Passage",
    "Prompt",
    "Summary",
    "Turn",
    "provider_for",
]


def provider_for(settings: Settings) -> AIProvider:
    """The OpenAI-compatible provider when OPENAI_API_KEY or OPENAI_BASE_URL is set (a
    local server may need no key), else the local responder."""
    if not (settings.openai_api_key or settings.openai_base_url):
        return LocalProvider()
    from memoryd.bridges.ai.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        chat_model=settings.openai_chat_model,
        embedding_model=settings.openai_embedding_model,
        timeout=settings.ai_timeout,
        max_retries=settings.ai_max_retries,
    )
