"""The socket request rate and its abuse rule (close 4008), on a fake clock."""

from __future__ import annotations

import math

from memoryd.server.ratelimit import RequestRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waiting_out_each_hint_is_never_abuse() -> None:
    clock = Clock()
    rate = RequestRate(20, 60, clock)
    refused = 0
    for _ in range(2000):
        while wait := rate.take():
            refused += 1
            assert not rate.refused(wait)
            clock.now += math.ceil(wait * 1000) / 1000  # the hint, as rounded on the wire
        clock.now += 0.0001  # the request itself
    assert refused > 1000


def test_a_hint_honoured_a_little_early_is_within_the_slack() -> None:
    clock = Clock()
    rate = RequestRate(1, 2, clock)
    rate.take(), rate.take()
    for _ in range(10):
        wait = rate.take()
        assert wait and not rate.refused(wait)
        clock.now += wait - 0.015  # 15 ms early: jitter, not abuse


def test_more_than_burst_requests_before_the_hint_are_abuse() -> None:
    clock = Clock()
    rate = RequestRate(1, 2, clock)
    rate.take(), rate.take()
    wait = rate.take()
    assert wait and not rate.refused(wait)  # the first refusal: the client could not know
    verdicts = []
    for _ in range(3):
        clock.now += 0.01
        wait = rate.take()
        verdicts.append(rate.refused(wait))
    assert verdicts == [False, False, True]  # the third early request is one over the burst


def test_early_requests_are_forgotten_after_the_window() -> None:
    clock = Clock()
    rate = RequestRate(1, 2, clock)
    rate.take(), rate.take()
    rate.refused(rate.take())
    for _ in range(2):
        clock.now += 0.01
        assert not rate.refused(rate.take())
    clock.now += 11.0  # the early ones are old now; bucket refilled
    assert rate.take() == 0.0 and rate.take() == 0.0
    rate.refused(rate.take())
    for _ in range(2):
        clock.now += 0.01
        assert not rate.refused(rate.take())
