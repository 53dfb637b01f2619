"""Typed keys of the application and request containers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from memoryd.config import Settings
    from memoryd.handlers.context import Caller, Services
    from memoryd.server.acks import AckWriter
    from memoryd.server.hub import Hub
    from memoryd.server.jobs import JobRunner
    from memoryd.server.metrics import Metrics
    from memoryd.server.ratelimit import Decision, Limiter
    from memoryd.server.sockets import SocketServer
    from memoryd.storage.database import Database

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
SERVICES: web.AppKey[Services] = web.AppKey("services")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
LIMITERS: web.AppKey[dict[str, Limiter]] = web.AppKey("limiters")
STARTED_AT: web.AppKey[float] = web.AppKey("started_at")
SOCKETS: web.AppKey[SocketServer] = web.AppKey("sockets")
JOBS: web.AppKey[JobRunner] = web.AppKey("jobs")
DATABASE: web.AppKey[Database] = web.AppKey("database")
HTTP_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("http_session")  # outbound calls
HUB: web.AppKey[Hub] = web.AppKey("hub")
ACKS: web.AppKey[AckWriter] = web.AppKey("acks")

# Request-scoped values.
CALLER: web.RequestKey[Caller] = web.RequestKey("caller")
RATE_DECISION: web.RequestKey[Decision] = web.RequestKey("rate_decision")
REDIS: web.AppKey[Any] = web.AppKey("redis")  # redis.asyncio.Redis when REDIS_URL is set
SHUTTING_DOWN: web.AppKey[asyncio.Event] = web.AppKey("shutting_down")
