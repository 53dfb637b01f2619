"""Any OpenAI-compatible ``POST /embeddings`` through the ``openai`` SDK (retries with
backoff are the SDK's; a failure raises `EmbeddingError` and the job retries later)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import openai

from memoryd.bridges.embeddings import EmbeddingError


class OpenAIEmbedder:
    name = "openai"
    batch_size = 128

    def __init__(
        self, *, api_key: str | None, base_url: str | None, model: str, dimension: int,
        timeout: float = 30.0, max_retries: int = 2, send_dimensions: bool = True,
    ) -> None:  # fmt: skip
        self.model = model
        self.dimension = dimension
        self._send_dimensions = send_dimensions
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused", base_url=base_url, timeout=timeout,
            max_retries=max_retries,
        )  # fmt: skip

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            if self._send_dimensions:
                resp = await self._client.embeddings.create(
                    model=self.model, input=list(texts), dimensions=self.dimension,
                    encoding_format="float",
                )  # fmt: skip
            else:
                resp = await self._client.embeddings.create(
                    model=self.model, input=list(texts), encoding_format="float"
                )
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"embeddings request failed: {type(exc).__name__}") from exc
        rows = sorted(resp.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise EmbeddingError(f"asked for {len(texts)} embeddings, got {len(rows)}")
        out = []
        for row in rows:
            vector = [float(x) for x in row.embedding]
            if len(vector) != self.dimension:
                raise EmbeddingError(
                    f"{self.model} returned {len(vector)} dimensions, {self.dimension} expected"
                )
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            out.append([x / norm for x in vector])
        return out

    async def aclose(self) -> None:
        await self._client.close()
