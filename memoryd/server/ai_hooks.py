"""The server's side of `memoryd.handlers.memo.runtime.AIHooks`: the ``ai`` rate limit and
the Prometheus AI metrics, for handlers that must not import the server."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from memoryd.errors import RateLimited
from memoryd.server.keys import LIMITERS, METRICS


class ServerAIHooks:
    def __init__(self, app: web.Application) -> None:
        self._app = app  # limiters are read per call: with Redis they are replaced at start

    async def admit(self, user_id: UUID) -> None:
        decision = await self._app[LIMITERS]["ai"].check(str(user_id))
        if decision is not None and not decision.allowed:
            self._app[METRICS].rate_limited_total.labels("ai").inc()
            raise RateLimited(
                "Too many AI requests, please try again later",
                retry_after=decision.reset_after,
                details={"limit": "ai", "retryAfter": decision.retry_after},
            )

    def observe(self, model: str, status: str, seconds: float) -> None:
        metrics = self._app[METRICS]
        metrics.ai_requests_total.labels(model, status).inc()
        metrics.ai_request_duration.labels(model).observe(seconds)
