"""DeliveryCursor: live and replayed events become one gap-free, in-order, exactly-once stream."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from memoryd.protocol.delivery import DeliveryCursor, Offer


def live(seq: int) -> str:
    return f"live-{seq}"


def caught_up_cursor(last_seq: int, **kw: int) -> DeliveryCursor[str]:
    """A cursor whose resume read found nothing new: following live events."""
    cursor: DeliveryCursor[str] = DeliveryCursor(last_seq, **kw)
    assert cursor.begin_read() == last_seq
    assert cursor.finish_read() == ([], True)
    assert not cursor.catching_up
    return cursor


def test_a_new_cursor_catches_up_first() -> None:
    cursor: DeliveryCursor[str] = DeliveryCursor(5)
    assert cursor.catching_up
    # A live event during the resume read waits, even the next one in line.
    assert cursor.offer_live(6, live(6)) == Offer()
    assert cursor.buffered == 1


def test_live_events_in_order_go_straight_out() -> None:
    cursor = caught_up_cursor(0)
    for seq in range(1, 6):
        assert cursor.offer_live(seq, live(seq)) == Offer(send=[live(seq)])
    assert cursor.last_seq == 5
    assert cursor.buffered == 0


def test_duplicates_are_dropped() -> None:
    cursor = caught_up_cursor(3)
    assert cursor.offer_live(4, live(4)).send == [live(4)]
    for seq in (1, 3, 4):  # replayed before, or published twice
        assert cursor.offer_live(seq, live(seq)) == Offer()
    assert cursor.last_seq == 4
    assert cursor.buffered == 0
    # And from the log: nothing at or below what was sent.
    assert not cursor.accept_replayed(4)
    assert not cursor.accept_replayed(2)
    assert cursor.last_seq == 4


def test_a_gap_starts_one_catch_up_that_fills_it_from_the_log() -> None:
    cursor = caught_up_cursor(3)
    offer = cursor.offer_live(5, live(5))  # 4 is missing
    assert offer == Offer(send=[], start_catch_up=True)
    assert cursor.catching_up
    # More live events while catching up wait, and do not start a second catch-up.
    assert cursor.offer_live(6, live(6)) == Offer()
    assert cursor.buffered == 2
    assert cursor.begin_read() == 3
    assert cursor.accept_replayed(4)
    assert cursor.accept_replayed(5)  # the log also has 5: sent from there, once
    ready, caught_up = cursor.finish_read()
    assert (ready, caught_up) == ([live(6)], True)
    assert cursor.last_seq == 6
    assert not cursor.catching_up
    assert cursor.offer_live(7, live(7)).send == [live(7)]


def test_live_events_buffered_during_catch_up_drain_in_seq_order() -> None:
    cursor: DeliveryCursor[str] = DeliveryCursor(0)
    for seq in (5, 3, 4):  # out of order, as concurrent commits may publish
        assert cursor.offer_live(seq, live(seq)) == Offer()
    assert cursor.begin_read() == 0
    assert cursor.accept_replayed(1)
    assert cursor.accept_replayed(2)
    ready, caught_up = cursor.finish_read()
    assert ready == [live(3), live(4), live(5)]
    assert caught_up
    assert cursor.last_seq == 5
    assert cursor.buffered == 0


def test_a_buffer_still_behind_a_gap_is_not_caught_up() -> None:
    cursor: DeliveryCursor[str] = DeliveryCursor(0)
    cursor.offer_live(3, live(3))  # 2 is committed but its publish is still on its way
    cursor.begin_read()
    assert cursor.accept_replayed(1)  # the read saw only 1
    assert cursor.finish_read() == ([], False)
    assert cursor.catching_up
    assert cursor.begin_read() == 1
    assert cursor.accept_replayed(2)
    assert cursor.accept_replayed(3)
    assert cursor.finish_read() == ([], True)
    assert cursor.last_seq == 3


def test_buffer_overflow_means_not_caught_up_until_the_log_is_read_again() -> None:
    cursor: DeliveryCursor[str] = DeliveryCursor(0, buffer_limit=2)
    cursor.begin_read()
    for seq in (2, 3, 4, 5):  # more than the buffer holds
        cursor.offer_live(seq, live(seq))
    assert cursor.buffered <= 2
    assert cursor.accept_replayed(1)
    ready, caught_up = cursor.finish_read()
    assert not caught_up  # what was dropped from the buffer is in the log
    assert cursor.catching_up
    assert cursor.begin_read() == cursor.last_seq
    for seq in range(cursor.last_seq + 1, 6):
        assert cursor.accept_replayed(seq)
    ready2, caught_up = cursor.finish_read()
    assert caught_up
    assert cursor.last_seq == 5
    assert [*ready, *ready2] == []  # everything came from the log, nothing twice


def test_overflow_during_a_later_read_is_not_forgotten() -> None:
    cursor: DeliveryCursor[str] = DeliveryCursor(0, buffer_limit=1)
    cursor.begin_read()
    cursor.offer_live(2, live(2))
    cursor.offer_live(3, live(3))  # overflow
    assert cursor.accept_replayed(1)
    assert cursor.finish_read()[1] is False
    cursor.begin_read()  # a fresh read forgets the old overflow ...
    cursor.offer_live(4, live(4))
    cursor.offer_live(5, live(5))  # ... but not one that happens during it
    assert cursor.accept_replayed(2)
    assert cursor.accept_replayed(3)
    assert cursor.finish_read() == ([], False)


# -- a seeded model of the socket: commits, reordered/lost/duplicated publishes, batched
# log reads interleaved with live offers at every step -----------------------------------


@dataclass
class Model:
    rng: random.Random
    start: int  # the device's resume point
    total: int
    batch: int
    committed: int
    cursor: DeliveryCursor[int]
    out: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)  # publishes not yet delivered
    reading: list[int] | None = None  # rows of the log read in progress
    full_batch: bool = False
    task_running: bool = True  # like Connection.start: the resume read runs first
    log_reads: int = 0

    def emit(self, seq: int) -> None:
        expected = self.out[-1] + 1 if self.out else self.start + 1
        assert seq == expected, f"sent {seq} after {self.out[-5:]}"
        self.out.append(seq)

    def commit(self) -> None:
        self.committed += 1
        seq = self.committed
        roll = self.rng.random()
        if roll < 0.1 and seq < self.total:
            return  # a lost publish (another node, Redis); the last one always arrives
        self.in_flight.append(seq)
        if roll > 0.9:
            self.in_flight.append(seq)  # published twice

    def deliver_one(self) -> None:
        seq = self.in_flight.pop(self.rng.randrange(len(self.in_flight)))
        offer = self.cursor.offer_live(seq, seq)
        for item in offer.send:
            self.emit(item)
        if offer.start_catch_up:
            assert not self.task_running, "a second catch-up while one runs"
            self.task_running = True

    def catch_up_step(self) -> None:
        if self.reading is None:
            after = self.cursor.begin_read()
            self.log_reads += 1
            upto = min(self.committed, after + self.batch)
            self.reading = list(range(after + 1, upto + 1))
            self.full_batch = len(self.reading) == self.batch
            return
        if self.reading:
            seq = self.reading.pop(0)
            if self.cursor.accept_replayed(seq):
                self.emit(seq)
            return
        self.reading = None
        if self.full_batch:
            return  # read the next batch
        ready, caught_up = self.cursor.finish_read()
        for item in ready:
            self.emit(item)
        if caught_up:
            self.task_running = False

    def step(self) -> None:
        choices = []
        if self.committed < self.total:
            choices.append(self.commit)
        if self.in_flight:
            choices.append(self.deliver_one)
        if self.task_running:
            choices.append(self.catch_up_step)
        self.rng.choice(choices)()


def run_model(seed: int) -> Model:
    rng = random.Random(seed)
    total = rng.randint(1, 120)
    already = rng.randint(0, total)  # committed before the device connected
    start = rng.randint(0, already)
    model = Model(
        rng=rng,
        start=start,
        total=total,
        batch=rng.choice([1, 2, 3, 500]),
        committed=already,
        cursor=DeliveryCursor(start, buffer_limit=rng.choice([1, 2, 4, 1024])),
    )
    for _ in range(100_000):
        if model.committed == model.total and not model.in_flight and not model.task_running:
            break
        model.step()
    else:  # pragma: no cover
        raise AssertionError("the model did not settle")
    return model


@pytest.mark.parametrize("block", range(10))
def test_interleaved_replay_and_live_deliver_everything_once_in_order(block: int) -> None:
    reads = 0
    for seed in range(block * 60, block * 60 + 60):
        model = run_model(seed)
        assert model.out == list(range(model.start + 1, model.total + 1)), f"seed={seed}"
        assert model.cursor.last_seq == model.total, f"seed={seed}"
        assert not model.cursor.catching_up and model.cursor.buffered == 0, f"seed={seed}"
        reads += model.log_reads
    assert reads > 60  # the runs really went through the log, not only live
