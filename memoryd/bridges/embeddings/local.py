"""The offline default: wordllama's static token embeddings (MIT), weights and tokenizer
inside its wheel. Plain ``WordLlama.load()`` would try the Hugging Face hub first; loading
from the package directory with downloads disabled never touches the network."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Any

DIMENSIONS = (64, 128, 256)  # the Matryoshka truncations the shipped 256-dim model allows


class LocalEmbedder:
    name = "local"
    batch_size = 256

    def __init__(self, dimension: int = 256) -> None:
        if dimension not in DIMENSIONS:
            raise ValueError(f"the local embedder supports dimensions {DIMENSIONS}")
        self.dimension = dimension
        self.model = f"wordllama-l2-supercat-{dimension}"
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import wordllama

                self._model = wordllama.WordLlama.load(
                    cache_dir=os.path.dirname(wordllama.__file__),
                    disable_download=True,
                    dim=256,  # the one set of weights the wheel ships
                    trunc_dim=self.dimension if self.dimension != 256 else None,
                )
            return self._model

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._load().embed(list(texts), norm=True)
        return vectors.tolist()  # type: ignore[no-any-return]  # numpy: Python floats at C speed

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)

    async def aclose(self) -> None:
        return None
