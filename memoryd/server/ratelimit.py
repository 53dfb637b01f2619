"""Fixed-window rate limits kept in this process (shared through Redis in multi-node)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from memoryd.config import RateLimit

_PRUNE_EVERY = 10_000  # keys; bounds memory under a flood of distinct clients


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the window resets

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait before trying again (``Retry-After``), at least 1."""
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> dict[str, str]:
        """The IETF draft ``RateLimit-*`` headers (as express-rate-limit sends them)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class Limiter(Protocol):
    async def check(self, key: str) -> Decision | None: ...


class RateLimiter:
    def __init__(self, rule: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> Decision | None:
        """Count one request for ``key``; None when this limit is switched off."""
        if not self.rule.enabled:
            return None
        now = self._clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.rule.window:
            start, count = now, 0
        reset_after = start + self.rule.window - now
        if count >= self.rule.limit:
            return Decision(False, self.rule.limit, 0, reset_after)
        self._windows[key] = (start, count + 1)
        if len(self._windows) > _PRUNE_EVERY:
            self._prune(now)
        return Decision(True, self.rule.limit, self.rule.limit - count - 1, reset_after)

    async def check(self, key: str) -> Decision | None:
        return self.hit(key)

    def _prune(self, now: float) -> None:
        window = self.rule.window
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < window}


class SharedRateLimiter:
    """The same fixed windows kept in Redis, so every node counts against one limit.

    Windows are aligned on the wall clock (``floor(now / window)``) so nodes agree on
    them. When Redis does not answer within ``timeout`` the node falls back to its own
    in-process counter: limits loosen during an outage, requests are never blocked by it.
    """

    def __init__(
        self, name: str, rule: RateLimit, client: Any, fallback: RateLimiter, timeout: float = 0.5
    ) -> None:
        self.name = name
        self.rule = rule
        self._redis = client
        self._fallback = fallback
        self._timeout = timeout

    async def check(self, key: str) -> Decision | None:
        if not self.rule.enabled:
            return None
        now = time.time()
        index = int(now // self.rule.window)
        reset_after = (index + 1) * self.rule.window - now
        redis_key = f"memoryd:rl:{self.name}:{key}:{index}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(redis_key)
            pipe.expire(redis_key, math.ceil(self.rule.window) + 1)
            count, _ = await asyncio.wait_for(pipe.execute(), self._timeout)
        except (RedisError, OSError, TimeoutError):
            return self._fallback.hit(key)
        limit = self.rule.limit
        return Decision(count <= limit, limit, max(0, limit - count), reset_after)


class TokenBucket:
    """Per-connection request rate: ``rate`` tokens a second, at most ``burst`` saved."""

    __slots__ = ("_at", "_clock", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take one token; 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


# A request refused this long before the time an earlier refusal hinted (``retryAfter``)
# counts as abuse: 20 ms, or a tenth of the hint when that is longer, covers the hint's
# rounding to 1 ms, timer and clock jitter. Arriving after the hint is never abuse.
HINT_SLACK = 0.02
HINT_SLACK_SHARE = 0.1
ABUSE_WINDOW = 10.0


class RequestRate(TokenBucket):
    """A socket's token bucket plus the abuse rule behind close code 4008.

    Being refused is not abuse: a client cannot know the bucket is empty until told. A
    refused request counts only when it arrives before the previous refusal's hint (less
    the slack) has passed; more than ``burst`` such requests within ``ABUSE_WINDOW``
    seconds are abuse. So a client that sleeps the ``retryAfter`` it was given is never
    closed, however long it keeps sending at the limit.
    """

    __slots__ = ("_early", "_not_before", "_slack")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(rate, burst, clock)
        self._not_before = 0.0  # the previous refusal's hinted time, less the slack
        self._early: deque[float] | None = None  # made on the first early request

    def refused(self, wait: float) -> bool:
        """Record a refusal with hint ``wait``; True when the socket is now abusive."""
        now = self._clock()
        early = now < self._not_before
        self._not_before = now + wait - max(HINT_SLACK, HINT_SLACK_SHARE * wait)
        if not early:
            return False
        times = self._early
        if times is None:
            times = self._early = deque()
        times.append(now)
        while now - times[0] > ABUSE_WINDOW:
            times.popleft()
        return len(times) > self.burst
