"""Exactly-once, in-order delivery of one user's events to one device session.

Pure bookkeeping, no I/O: the socket layer feeds it live events (from the hub) and
replayed events (read from the event log) and sends what it returns.

A session starts *catching up*: it replays the log after the resume point while live
events that arrive meanwhile wait in a bounded buffer. When the log read comes back
short, the buffer drains in seq order. A live event that skips a seq (a concurrent
writer's publish is still on its way, or a node missed a message) starts another catch-up
from the log, which is the truth. Duplicates (seq <= last sent) are dropped. So a device
never sees a gap, a duplicate, or an out-of-order event at the switch-over or later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Offer(Generic[T]):
    """What to do with a live event: send these now; start a catch-up if asked."""

    send: list[T] = field(default_factory=list)
    start_catch_up: bool = False


class DeliveryCursor(Generic[T]):
    def __init__(self, last_seq: int, *, buffer_limit: int = 1024) -> None:
        self.last_seq = last_seq
        self.catching_up = True  # the resume replay runs first
        self.buffer_limit = buffer_limit
        self._buffer: dict[int, T] = {}
        self._overflowed = False

    def offer_live(self, seq: int, item: T) -> Offer[T]:
        """A live event arrived from fan-out."""
        if seq <= self.last_seq:
            return Offer()  # already delivered (replayed, or published twice)
        if not self.catching_up and seq == self.last_seq + 1:
            self.last_seq = seq
            return Offer(send=[item])
        self._hold(seq, item)
        if self.catching_up:
            return Offer()
        self.catching_up = True  # a gap: read the log from last_seq
        return Offer(start_catch_up=True)

    def request_catch_up(self) -> bool:
        """Someone knows the log is ahead (a poll, a reconnect): read it.

        True when a catch-up must be started (none is running).
        """
        if self.catching_up:
            return False
        self.catching_up = True
        return True

    def begin_read(self) -> int:
        """Before each read of the log: the seq to read after."""
        self._overflowed = False
        return self.last_seq

    def accept_replayed(self, seq: int) -> bool:
        """An event read from the log; True when it is to be sent."""
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        self._buffer.pop(seq, None)
        return True

    def finish_read(self, room: int | None = None) -> tuple[list[T], bool]:
        """After a short log read: buffered events now contiguous, and whether caught up.

        At most ``room`` events are handed out (the socket's free queue slots). Not caught
        up when the buffer overflowed during the read (what it dropped is in the log),
        still holds a later seq than the next one (its predecessor's publish is still on
        its way), or did not fit: read the log again.
        """
        ready: list[T] = []
        for seq in sorted(s for s in self._buffer if s <= self.last_seq):
            del self._buffer[seq]
        while (nxt := self.last_seq + 1) in self._buffer and (room is None or len(ready) < room):
            ready.append(self._buffer.pop(nxt))
            self.last_seq = nxt
        caught_up = not self._overflowed and not self._buffer
        if caught_up:
            self.catching_up = False
        return ready, caught_up

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _hold(self, seq: int, item: T) -> None:
        if len(self._buffer) >= self.buffer_limit:
            self._buffer.clear()  # all of it is in the log; the next read fetches it
            self._overflowed = True
        self._buffer[seq] = item
