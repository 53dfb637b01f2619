"""/health, /ready, /metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import resource
import time
from datetime import UTC, datetime
from typing import Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memoryd import __version__
from memoryd.protocol.models import AwareDatetime
from memoryd.server.http import json_response, services
from memoryd.server.keys import METRICS, REDIS, SHUTTING_DOWN, STARTED_AT
from memoryd.server.openapi import openapi_document
from memoryd.server.operations import Op, Routes

routes = Routes(tag="Service")

Check = Literal["healthy", "unhealthy"]


class HealthChecks(msgspec.Struct, kw_only=True):
    database: Check
    redis: Literal["healthy", "unhealthy", "disabled"]
    memory: Literal["healthy", "warning"]


class Health(msgspec.Struct, rename="camel", kw_only=True):
    """`unhealthy` (503) when the database fails its check; `degraded` (200) when only a
    configured Redis does (the node serves on, delivering by polling the event log)."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: AwareDatetime
    uptime: float
    version: str
    checks: HealthChecks
    memory_mb: float


class Ready(msgspec.Struct, kw_only=True):
    """`not ready` (503) while shutting down or when the database is unavailable; `ready`
    with `degraded: "redis unavailable"` while only Redis is down."""

    status: Literal["ready", "not ready"]
    error: str | UnsetType = UNSET
    degraded: str | UnsetType = UNSET


_CHECK_TIMEOUT = 2.0
_MEMORY_WARNING_MB = 500


async def _check_database(request: web.Request) -> Check:
    try:
        await asyncio.wait_for(services(request).store.db.ping(), _CHECK_TIMEOUT)
        return "healthy"
    except Exception:
        return "unhealthy"


async def _check_redis(request: web.Request) -> Literal["healthy", "unhealthy", "disabled"]:
    client = request.app.get(REDIS)
    if client is None:
        return "disabled"
    try:
        await asyncio.wait_for(client.ping(), _CHECK_TIMEOUT)
        return "healthy"
    except Exception:
        return "unhealthy"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1024 / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@routes.get(
    "/health",
    Op(
        "health",
        "Health of this node and its dependencies",
        response=Health,
        auth=False,
        also=((503, "Unhealthy: the database failed its check", Health),),
    ),
)
async def health(request: web.Request) -> web.Response:
    database, redis = await asyncio.gather(_check_database(request), _check_redis(request))
    rss = _rss_mb()
    # Without Redis the node still serves everything (it delivers by polling the event
    # log), so Redis down is "degraded", not a reason for an orchestrator to pull or
    # restart every node at once. Without the database nothing works.
    healthy = database == "healthy"
    body = Health(
        status="unhealthy" if not healthy else "degraded" if redis == "unhealthy" else "healthy",
        timestamp=datetime.now(UTC),
        uptime=round(time.time() - request.app[STARTED_AT], 3),
        version=__version__,
        checks=HealthChecks(
            database=database,
            redis=redis,
            memory="healthy" if rss < _MEMORY_WARNING_MB else "warning",
        ),
        memory_mb=round(rss, 1),
    )
    return json_response(body, status=200 if healthy else 503)


@routes.get(
    "/ready",
    Op(
        "ready",
        "Readiness for traffic",
        response=Ready,
        auth=False,
        also=((503, "Not ready: shutting down or the database unavailable", Ready),),
    ),
)
async def ready(request: web.Request) -> web.Response:
    if request.app[SHUTTING_DOWN].is_set():
        return json_response(Ready(status="not ready", error="shutting down"), status=503)
    database, redis = await asyncio.gather(_check_database(request), _check_redis(request))
    if database != "healthy":
        return json_response(Ready(status="not ready", error="database unavailable"), status=503)
    if redis == "unhealthy":  # served by polling the log meanwhile (see /health)
        return json_response(Ready(status="ready", degraded="redis unavailable"))
    return json_response(Ready(status="ready"))


@routes.get(
    "/metrics",
    Op(
        "metrics",
        "Prometheus metrics",
        auth=False,
        response={"type": "string"},
        media=CONTENT_TYPE_LATEST,
    ),
)
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get(
    "/api/openapi.json",
    Op("openapi", "This OpenAPI document", auth=False, response={"type": "object"}),
)
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app))
