"""Embedders: text -> unit vectors whose cosine says how close two meanings are.

`Embedder` is the interface. `LocalEmbedder` (wordllama, weights inside its wheel, no
download) is the default and works offline; `OpenAIEmbedder` calls any OpenAI-compatible
``/embeddings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class EmbeddingError(Exception):
    """The embedder failed; the job that asked retries with backoff."""


class Embedder(Protocol):
    name: str  # "local" or "openai"
    model: str
    dimension: int
    batch_size: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector of ``dimension`` floats per text, in order."""
        ...

    async def aclose(self) -> None: ...
