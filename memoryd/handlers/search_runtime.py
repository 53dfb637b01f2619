"""What search runs with: the semantic half when configured, and the fusion weights."""

from __future__ import annotations

from dataclasses import dataclass

from memoryd.bridges.embeddings import Embedder
from memoryd.bridges.vectors import VectorStore


@dataclass
class SearchRuntime:
    embedder: Embedder | None = None
    vectors: VectorStore | None = None
    text_weight: float = 1.0
    semantic_weight: float = 1.0
    fuzzy_weight: float = 0.5  # trigram and prefix hits, inside the text ranking
    min_similarity: float = 0.0  # semantic hits below this cosine are left out

    @property
    def semantic(self) -> bool:
        return self.embedder is not None and self.vectors is not None
