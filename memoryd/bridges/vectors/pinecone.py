"""Pinecone as the vector store, through the ``pinecone`` package (the successor of the
deprecated ``pinecone-client``): a serverless index, one namespace per user.

Vectors carry ``userId`` and ``memoryId`` metadata and every query also filters on
``userId``: a namespace mix-up could not return another user's vectors. The SDK is
synchronous (urllib3); calls run in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from memoryd.bridges.vectors import VectorItem, VectorMatch, parse_doc_id

_UPSERT_BATCH = 100  # Pinecone's recommended upsert batch
_DELETE_BATCH = 1000  # its limit of ids per delete


class PineconeStore:
    name = "pinecone"

    def __init__(self, *, api_key: str, host: str, timeout: float = 15.0) -> None:
        from pinecone import Pinecone

        self._index = Pinecone(api_key=api_key).Index(host=host)
        self._timeout = timeout

    @staticmethod
    def namespace(user_id: UUID) -> str:
        return f"user-{user_id}"

    async def _call(self, fn: Any, /, **kwargs: Any) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(fn, **kwargs), self._timeout)

    async def prepare(self, dimension: int) -> int | None:
        stats = await self._call(self._index.describe_index_stats)
        found = getattr(stats, "dimension", None)
        return int(found) if found else None

    async def upsert_many(self, items: Mapping[UUID, Sequence[VectorItem]], model: str) -> None:
        for user_id, mine in items.items():  # a namespace per user: a request each
            await self.upsert(user_id, mine, model)

    async def upsert(self, user_id: UUID, items: Sequence[VectorItem], model: str) -> None:
        ns = self.namespace(user_id)
        for start in range(0, len(items), _UPSERT_BATCH):
            batch = [
                {
                    "id": i.doc_id,
                    "values": [float(x) for x in i.vector],
                    "metadata": {
                        "userId": str(user_id),
                        "memoryId": str(i.memory_id),
                        "model": model,
                    },
                }
                for i in items[start : start + _UPSERT_BATCH]
            ]
            await self._call(self._index.upsert, vectors=batch, namespace=ns)

    async def delete(self, user_id: UUID, doc_ids: Sequence[str]) -> None:
        ns = self.namespace(user_id)
        for start in range(0, len(doc_ids), _DELETE_BATCH):
            ids = list(doc_ids[start : start + _DELETE_BATCH])
            await self._call(self._index.delete, ids=ids, namespace=ns)

    async def query(self, user_id: UUID, vector: Sequence[float], limit: int) -> list[VectorMatch]:
        resp = await self._call(
            self._index.query, vector=[float(x) for x in vector], top_k=limit,
            namespace=self.namespace(user_id), filter={"userId": {"$eq": str(user_id)}},
            include_metadata=True,
        )  # fmt: skip
        out = []
        for match in resp.matches or []:
            meta = match.metadata or {}
            if meta.get("userId") != str(user_id):
                continue  # never trust an answer about another user's vectors
            kind, doc_uuid = parse_doc_id(match.id)
            memory_id = UUID(meta["memoryId"])
            out.append(VectorMatch(match.id, memory_id, doc_uuid if kind == "msg" else None,
                                   float(match.score)))  # fmt: skip
        return out

    async def fetch(self, user_id: UUID, doc_ids: Sequence[str]) -> dict[str, list[float]]:
        resp = await self._call(
            self._index.fetch, ids=list(doc_ids), namespace=self.namespace(user_id)
        )
        return {k: list(v.values) for k, v in (resp.vectors or {}).items()}

    async def aclose(self) -> None:
        await asyncio.to_thread(self._index.close)
