"""A committed event on its way to sockets: the event frame is built here, once.

Live fan-out encodes each event at most once per codec (lazily, on first use) whatever
the number of sockets; replay from the log builds the same frame, so an event looks the
same live and replayed.
"""

from __future__ import annotations

import time

from memoryd.protocol.codec import Codec
from memoryd.protocol.frames import EventFrame
from memoryd.protocol.models import Event


def event_frame(event: Event) -> EventFrame:
    """The ``event`` frame of a committed event (``created_at`` does not travel)."""
    return EventFrame(seq=event.seq, event=event.type, data=event.data)


class OutboundEvent:
    """One committed event on its way out, encoded once per codec."""

    __slots__ = ("_encoded", "event", "published_at")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.published_at = time.perf_counter()
        self._encoded: dict[str, bytes] = {}

    @property
    def seq(self) -> int:
        return self.event.seq

    def encoded(self, codec: Codec) -> bytes:
        data = self._encoded.get(codec.name)
        if data is None:
            data = self._encoded[codec.name] = codec.encode(event_frame(self.event))
        return data
