"""/health, /ready, /metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import resource
import time
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memoryd import __version__
from memoryd.server.http import json_response, services
from memoryd.server.keys import METRICS, REDIS, SHUTTING_DOWN, STARTED_AT
from memoryd.server.openapi import openapi_document

routes = web.RouteTableDef()

_CHECK_TIMEOUT = 2.0
_MEMORY_WARNING_MB = 500


async def _check_database(request: web.Request) -> str:
    try:
        await asyncio.wait_for(services(request).store.db.ping(), _CHECK_TIMEOUT)
        return "healthy"
    except Exception:
        return "unhealthy"


async def _check_redis(request: web.Request) -> str:
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


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    database, redis = await asyncio.gather(_check_database(request), _check_redis(request))
    rss = _rss_mb()
    # Without Redis the node still serves everything (it delivers by polling the event
    # log), so Redis down is "degraded", not a reason for an orchestrator to pull or
    # restart every node at once. Without the database nothing works.
    healthy = database == "healthy"
    status = "unhealthy" if not healthy else "degraded" if redis == "unhealthy" else "healthy"
    body = {
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(),
        "uptime": round(time.time() - request.app[STARTED_AT], 3),
        "version": __version__,
        "checks": {
            "database": database,
            "redis": redis,
            "memory": "healthy" if rss < _MEMORY_WARNING_MB else "warning",
        },
        "memoryMb": round(rss, 1),
    }
    return json_response(body, status=200 if healthy else 503)


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    if request.app[SHUTTING_DOWN].is_set():
        return json_response({"status": "not ready", "error": "shutting down"}, status=503)
    database, redis = await asyncio.gather(_check_database(request), _check_redis(request))
    if database != "healthy":
        return json_response({"status": "not ready", "error": "database unavailable"}, status=503)
    if redis == "unhealthy":  # served by polling the log meanwhile (see /health)
        return json_response({"status": "ready", "degraded": "redis unavailable"})
    return json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
