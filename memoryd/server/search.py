"""Search at start-up: the embedder and the vector store the settings ask for, checked
against the index (its dimension), and the embedding job switched on."""

from __future__ import annotations

import logging

from memoryd.bridges.embeddings import Embedder
from memoryd.bridges.embeddings.local import LocalEmbedder
from memoryd.bridges.embeddings.openai import OpenAIEmbedder
from memoryd.bridges.vectors import VectorStore
from memoryd.config import Settings
from memoryd.errors import ConfigError
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.storage.search_vectors import PgVectorStore, pgvector_available
from memoryd.storage.store import Storage

log = logging.getLogger("memoryd.search")

OPENAI_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                     "text-embedding-ada-002": 1536}  # fmt: skip


# Semantic hits below this cosine are noise, not meaning. Measured on the local model:
# a word and a short related text score 0.25-0.6, unrelated short texts mostly under 0.1,
# and a synonym against a long message (the tests' "fortress" for a castle) just above it
# (docs/architecture.md §16b). Without a floor the nearest vectors always come back,
# however far.
MIN_SIMILARITY = {"local": 0.1, "openai": 0.2}


def embedder_for(settings: Settings) -> Embedder | None:
    if settings.embedder == "none":
        return None
    if settings.embedder == "local":
        return LocalEmbedder(settings.embedding_dimension or 256)
    model = settings.openai_embedding_model
    dimension = settings.embedding_dimension or OPENAI_DIMENSIONS.get(model)
    if dimension is None:
        raise ConfigError(f"set MEMORYD_EMBEDDING_DIMENSION for the embedding model {model!r}")
    return OpenAIEmbedder(
        api_key=settings.openai_api_key, base_url=settings.openai_base_url, model=model,
        dimension=dimension, timeout=settings.ai_timeout, max_retries=settings.ai_max_retries,
        send_dimensions=settings.embedding_dimension is not None,
    )  # fmt: skip


async def vector_store_for(settings: Settings, store: Storage) -> VectorStore | None:
    choice = settings.vector_store
    if choice == "auto":
        choice = "pinecone" if settings.pinecone_api_key else "pgvector"
        if choice == "pgvector" and not await pgvector_available(store.db):
            log.warning("pgvector is not available: search runs in text mode only")
            return None
    if choice == "none":
        return None
    if choice == "pinecone":
        from memoryd.bridges.vectors.pinecone import PineconeStore

        if not settings.pinecone_api_key or not settings.pinecone_host:
            raise ConfigError("Pinecone needs PINECONE_API_KEY and PINECONE_INDEX_HOST")
        return PineconeStore(api_key=settings.pinecone_api_key, host=settings.pinecone_host)
    if not await pgvector_available(store.db):
        raise ConfigError("MEMORYD_VECTOR_STORE=pgvector but the database has no pgvector")
    return PgVectorStore(store.db)


async def open_search(settings: Settings, store: Storage) -> SearchRuntime:
    runtime = SearchRuntime(
        text_weight=settings.search_text_weight,
        semantic_weight=settings.search_semantic_weight,
    )
    embedder = embedder_for(settings)
    if embedder is None:
        return runtime
    runtime.min_similarity = (
        settings.search_min_similarity
        if settings.search_min_similarity is not None
        else MIN_SIMILARITY.get(settings.embedder, 0.0)
    )
    vectors = await vector_store_for(settings, store)
    if vectors is None:
        await embedder.aclose()
        return runtime
    existing = await vectors.prepare(embedder.dimension)
    if existing is not None and existing != embedder.dimension:
        await embedder.aclose()
        await vectors.aclose()
        raise ConfigError(
            f"the {vectors.name} index holds {existing}-dimension vectors but the embedder "
            f"{embedder.model} makes {embedder.dimension}: set MEMORYD_EMBEDDING_DIMENSION="
            f"{existing}, or use a new index and run `memoryd reindex`"
        )
    model, _, store_name = await store.search.set_embedding(
        True, embedder.model, embedder.dimension, vectors.name
    )
    if model is not None and (model, store_name) != (embedder.model, vectors.name):
        log.warning(
            "the index was built with %s in %s; now %s in %s: run `memoryd reindex`",
            model, store_name, embedder.model, vectors.name,
        )  # fmt: skip
    runtime.embedder, runtime.vectors = embedder, vectors
    return runtime


async def close_search(runtime: SearchRuntime) -> None:
    if runtime.embedder is not None:
        await runtime.embedder.aclose()
    if runtime.vectors is not None:
        await runtime.vectors.aclose()
