"""What every handler is given: the services it may use and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from memoryd.bridges.blobs import BlobStore
from memoryd.bridges.google import GoogleOAuth
from memoryd.bridges.speech.base import Recognizer
from memoryd.bridges.whatsapp import WhatsAppBridge
from memoryd.config import Settings
from memoryd.handlers.caller import Caller
from memoryd.handlers.memo.runtime import AIRuntime
from memoryd.handlers.pipeline import MessagePipeline
from memoryd.handlers.search_runtime import SearchRuntime
from memoryd.handlers.tokens import TokenIssuer
from memoryd.protocol.models import Event
from memoryd.storage.store import Storage


class EventSink(Protocol):
    """Receives a user's committed events to deliver them to that user's devices."""

    def publish(self, user_id: UUID, events: Sequence[Event]) -> None: ...

    def signal(self, user_id: UUID, name: str, data: Any) -> None:
        """Send an ephemeral signal (e.g. ``ai.delta``) to every device of the user."""
        ...


class NoDelivery:
    """Sink for a process with no sockets attached (the CLI): events stay in the log only."""

    def publish(self, user_id: UUID, events: Sequence[Event]) -> None:
        return None

    def signal(self, user_id: UUID, name: str, data: Any) -> None:
        return None


@dataclass
class Services:
    settings: Settings
    store: Storage
    tokens: TokenIssuer
    events: EventSink
    google: GoogleOAuth | None = None
    whatsapp: WhatsAppBridge | None = None  # set when WHATSAPP_APP_SECRET is configured
    wake_jobs: Callable[[], None] = lambda: None  # a job was enqueued: run it now
    wake_embedding: Callable[[], None] = lambda: None  # a write queued a document to embed
    ai: AIRuntime = field(default_factory=AIRuntime)  # Memo: provider, limits, metrics
    # files: blob stores by name ("local" always, "s3" when configured); voice: recognizer
    blobs: dict[str, BlobStore] = field(default_factory=dict)
    speech: Recognizer | None = None  # the transcription engine, set by the server
    pipeline: MessagePipeline = field(default_factory=MessagePipeline)  # send planners
    search: SearchRuntime = field(default_factory=SearchRuntime)  # embedder, vector store

    def publish(self, user_id: UUID, *events: Event | None) -> None:
        committed = [e for e in events if e is not None]
        if committed:
            self.events.publish(user_id, committed)
            self.wake_embedding()  # its write may have queued an embedding (the triggers)


__all__ = ["Caller", "EventSink", "NoDelivery", "Services"]
