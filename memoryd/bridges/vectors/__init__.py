"""Vector stores: where embeddings live and are searched, one user's vectors at a time.

`VectorStore` is the interface; pgvector in the same PostgreSQL is the default
(`memoryd.storage.search_vectors`), Pinecone the option (`memoryd.bridges.vectors.pinecone`).
Every call names the user: a store keeps each user's vectors apart (a Pinecone namespace
per user, a ``user_id`` column) and never answers with another user's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID


@dataclass(frozen=True)
class VectorItem:
    doc_id: str  # "msg:<uuid>" or "mem:<uuid>"
    memory_id: UUID
    message_id: UUID | None
    vector: Sequence[float]


@dataclass(frozen=True)
class VectorMatch:
    doc_id: str
    memory_id: UUID
    message_id: UUID | None
    score: float  # cosine similarity, higher is closer


class VectorStore(Protocol):
    name: str

    async def prepare(self, dimension: int) -> int | None:
        """Make the index ready for vectors of ``dimension``; return the dimension the
        existing index has (None when it has none yet), for the start-up check."""
        ...

    async def upsert(self, user_id: UUID, items: Sequence[VectorItem], model: str) -> None: ...

    async def upsert_many(self, items: Mapping[UUID, Sequence[VectorItem]], model: str) -> None:
        """Several users' items (a sweep of the queue): in one request where the store
        can, else one per user."""
        ...

    async def delete(self, user_id: UUID, doc_ids: Sequence[str]) -> None: ...

    async def query(self, user_id: UUID, vector: Sequence[float], limit: int) -> list[VectorMatch]:
        """The user's ``limit`` nearest documents, nearest first."""
        ...

    async def aclose(self) -> None: ...


def parse_doc_id(doc_id: str) -> tuple[str, UUID]:
    kind, _, raw = doc_id.partition(":")
    return kind, UUID(raw)
