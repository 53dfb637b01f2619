"""``create_app(settings)``: every resource lives in a cleanup context, in start order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as redis_asyncio
from aiohttp import web

from memoryd.bridges.ai import provider_for
from memoryd.bridges.google import GoogleOAuth
from memoryd.bridges.whatsapp import GraphClient, Throttle, WhatsAppBridge
from memoryd.config import RateLimit, Settings
from memoryd.crypto import SecretBox
from memoryd.handlers import ai_reply, search_jobs, whatsapp
from memoryd.handlers.ai_runtime import AIRuntime
from memoryd.handlers.context import Services
from memoryd.handlers.tokens import TokenIssuer
from memoryd.keys import load_or_create_keys
from memoryd.server.acks import AckWriter
from memoryd.server.ai_hooks import ServerAIHooks
from memoryd.server.fanout import RedisFanout
from memoryd.server.http import request_middleware
from memoryd.server.hub import Hub
from memoryd.server.jobs import JobRunner
from memoryd.server.keys import (
    JOBS,
    LIMITERS,
    METRICS,
    REDIS,
    SERVICES,
    SETTINGS,
    SHUTTING_DOWN,
    SOCKETS,
    STARTED_AT,
)
from memoryd.server.maintenance import prune_events
from memoryd.server.metrics import Metrics
from memoryd.server.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from memoryd.server.routes import ai, auth, health, resources, sync, webhooks
from memoryd.server.routes import search as search_routes
from memoryd.server.search import close_search, open_search
from memoryd.server.sockets import SocketServer
from memoryd.storage.ai import AI_REPLY
from memoryd.storage.bootstrap import database_dsn, open_database
from memoryd.storage.store import Storage

log = logging.getLogger("memoryd.server")

_OUTBOUND_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[STARTED_AT] = time.time()
    app[SHUTTING_DOWN] = asyncio.Event()
    local: dict[str, Limiter] = {n: RateLimiter(r) for n, r in _limit_rules(settings).items()}
    app[LIMITERS] = local
    app.cleanup_ctx.append(_services_ctx)
    app.on_shutdown.append(_shutdown)
    app.router.add_get("/ws", _websocket)
    app.add_routes(health.routes)
    app.add_routes(auth.routes)
    app.add_routes(resources.routes)
    app.add_routes(sync.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(ai.routes)
    app.add_routes(search_routes.routes)
    return app


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with database_dsn(settings.database_url, settings.data_dir) as dsn:
        db = await open_database(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        keys = load_or_create_keys(settings)
        session = aiohttp.ClientSession(timeout=_OUTBOUND_TIMEOUT)
        redis_client = None
        if settings.redis_url:
            redis_client = redis_asyncio.from_url(
                settings.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        app[REDIS] = redis_client
        if redis_client is not None:  # limits shared by every node
            shared: dict[str, Limiter] = {
                name: SharedRateLimiter(name, rule, redis_client, RateLimiter(rule))
                for name, rule in _limit_rules(settings).items()
            }
            app[LIMITERS] = shared
        hub = Hub()
        app[SERVICES] = services = Services(
            settings=settings,
            store=Storage(db),
            tokens=TokenIssuer(
                keys.jwt_private_pem,
                keys.jwt_public_pem,
                access_ttl=settings.access_token_ttl,
                refresh_ttl=settings.refresh_token_ttl,
            ),
            events=hub,
            google=_google(settings, session),
            whatsapp=_whatsapp(settings, session, keys.secret_key),
        )
        fanout = None
        if redis_client is not None:
            fanout = RedisFanout(
                redis_client,
                hub,
                services.store.events,
                app[METRICS],
                poll_interval_down=settings.redis_poll_interval,
                presence_ttl=settings.presence_ttl,
            )
            hub.remote = fanout
            fanout.start()
        app[JOBS] = jobs = JobRunner(services.store.jobs)
        services.wake_jobs = jobs.wake
        services.ai = AIRuntime(provider=provider_for(settings), hooks=ServerAIHooks(app))
        jobs.register(AI_REPLY, ai_reply.job_handler(services))
        services.search = await open_search(settings, services.store)  # search: embeddings
        if services.search.semantic:
            jobs.register(search_jobs.EMBED, search_jobs.job_handler(services))
        if services.whatsapp is not None:  # only nodes configured for WhatsApp run its jobs
            for kind, handler in whatsapp.job_handlers(services).items():
                jobs.register(kind, handler)
        acks = AckWriter(services.store.devices, settings.ack_flush_interval)
        acks.start()
        app[SOCKETS] = SocketServer(settings, services, hub, app[METRICS], acks)
        pruner = asyncio.create_task(prune_events(services.store.events, settings), name="pruner")
        jobs.start()  # after every capability registered its job kinds
        try:
            yield
        finally:
            await jobs.stop()
            await services.ai.provider.aclose()
            await close_search(services.search)
            pruner.cancel()
            await acks.stop()
            if fanout is not None:
                await fanout.stop()
            await session.close()
            if redis_client is not None:
                await redis_client.aclose()
            await db.close()


def _limit_rules(settings: Settings) -> dict[str, RateLimit]:
    return {
        "auth": settings.rate_limit_auth,
        "api": settings.rate_limit_api,
        "upload": settings.rate_limit_upload,
        "ai": settings.rate_limit_ai,
    }


def _google(settings: Settings, session: aiohttp.ClientSession) -> GoogleOAuth | None:
    if not settings.google_client_id:
        return None
    return GoogleOAuth(
        session,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret,
        token_url=settings.google_token_url,
        jwks_url=settings.google_jwks_url,
    )


def _whatsapp(
    settings: Settings, session: aiohttp.ClientSession, secret_key: str
) -> WhatsAppBridge | None:
    if not settings.whatsapp_app_secret:
        return None
    return WhatsAppBridge(
        graph=GraphClient(session, settings.whatsapp_graph_url),
        box=SecretBox(secret_key, "whatsapp-access-token"),
        throttle=Throttle(settings.whatsapp_send_rate),
        data_dir=settings.data_dir,
        max_media_bytes=settings.whatsapp_max_media_bytes,
    )


async def _shutdown(app: web.Application) -> None:
    """SIGTERM/SIGINT: /ready turns 503, sockets drain and close with 1012, acks are saved."""
    app[SHUTTING_DOWN].set()
    sockets = app.get(SOCKETS)
    if sockets is not None:
        await sockets.shutdown(deadline=app[SETTINGS].shutdown_timeout / 2)


async def _websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[SOCKETS].handle(request)
