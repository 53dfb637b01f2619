"""``create_app(settings)``: every resource lives in a cleanup context of its own, in start
order, so a failed start-up or a failing stop leaves nothing else open."""

from __future__ import annotations

import asyncio
import contextlib
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
from memoryd.handlers import search_jobs, whatsapp
from memoryd.handlers.context import Services
from memoryd.handlers.memo import reply as ai_reply
from memoryd.handlers.memo.runtime import AIRuntime
from memoryd.handlers.tokens import TokenIssuer
from memoryd.keys import load_or_create_keys
from memoryd.server import files_setup
from memoryd.server.acks import AckWriter
from memoryd.server.ai_hooks import ServerAIHooks
from memoryd.server.fanout import RedisFanout
from memoryd.server.http import request_middleware
from memoryd.server.hub import Hub
from memoryd.server.jobs import JobRunner
from memoryd.server.keys import (
    ACKS,
    DATABASE,
    HTTP_SESSION,
    HUB,
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
from memoryd.server.operations import undocumented
from memoryd.server.ratelimit import Limiter, RateLimiter, SharedRateLimiter
from memoryd.server.routes import ai, auth, files, health, resources, sync, webhooks
from memoryd.server.routes import search as search_routes
from memoryd.server.routes import web as browser_client
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
    # One context per resource, in start order. aiohttp enters them one by one and, when
    # start-up fails half-way or at shutdown, exits those entered in reverse order, each
    # one even if another raised (the errors are collected): nothing is left open.
    app.cleanup_ctx.extend(
        [
            _database_ctx,
            _http_session_ctx,
            _redis_ctx,
            _services_ctx,
            _fanout_ctx,
            _ai_ctx,
            _files_ctx,
            _search_ctx,
            _acks_ctx,
            _pruner_ctx,
            _jobs_ctx,  # last: after every capability registered its job kinds
        ]
    )
    app.on_shutdown.append(_shutdown)
    app.router.add_get("/ws", _websocket)
    app.add_routes(health.routes)
    app.add_routes(auth.routes)
    app.add_routes(resources.routes)
    app.add_routes(sync.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(ai.routes)
    app.add_routes(files.routes)  # /api/files, /api/voice
    app.add_routes(browser_client.routes)  # the chat app at /, memoryd-client.js
    app.add_routes(search_routes.routes)  # /api/search
    return app


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool (and the embedded PostgreSQL when no DATABASE_URL is given)."""
    settings = app[SETTINGS]
    async with database_dsn(settings.database_url, settings.data_dir) as dsn:
        db = await open_database(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        app[DATABASE] = db
        try:
            yield
        finally:
            await db.close()


async def _http_session_ctx(app: web.Application) -> AsyncIterator[None]:
    """One client session for outbound calls (Google, the WhatsApp Graph API)."""
    async with aiohttp.ClientSession(timeout=_OUTBOUND_TIMEOUT) as session:
        app[HTTP_SESSION] = session
        yield


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """With REDIS_URL: the client, and rate limits shared by every node."""
    settings = app[SETTINGS]
    app[REDIS] = None
    if not settings.redis_url:
        yield
        return
    client = redis_asyncio.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    app[REDIS] = client
    try:
        shared: dict[str, Limiter] = {
            name: SharedRateLimiter(name, rule, client, RateLimiter(rule))
            for name, rule in _limit_rules(settings).items()
        }
        app[LIMITERS] = shared
        yield
    finally:
        await client.aclose()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keys, tokens, bridges and the hub, handed to every handler as `Services`."""
    settings = app[SETTINGS]
    keys = load_or_create_keys(settings)
    session = app[HTTP_SESSION]
    app[HUB] = hub = Hub()
    app[SERVICES] = services = Services(
        settings=settings,
        store=Storage(app[DATABASE]),
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
    # A send's stages in `memoryd_send_stage_seconds` (storage's and the hub's part).
    services.store.messages.observe = hub.observe = app[METRICS].observe_send_stage
    # The send pipeline's planners, run in this order on every new message.
    services.pipeline.add_planner("whatsapp", whatsapp.plan_outbound)
    services.pipeline.add_planner(
        "memo", ai_reply.send_planner(services), reads=ai_reply.MEMORY_METADATA_KEYS
    )
    gc_timing = app[METRICS].time_gc()  # memoryd_gc_pause_seconds
    try:
        yield
    finally:
        gc_timing.stop()


async def _fanout_ctx(app: web.Application) -> AsyncIterator[None]:
    """With Redis: the hub's peers are the other nodes (else `LocalPeers`, this node only)."""
    client = app[REDIS]
    if client is None:
        yield
        return
    settings = app[SETTINGS]
    hub = app[HUB]
    fanout = RedisFanout(
        client,
        hub,
        app[SERVICES].store.events,
        app[METRICS],
        poll_interval_down=settings.redis_poll_interval,
        presence_ttl=settings.presence_ttl,
    )
    hub.peers = fanout
    fanout.start()
    try:
        yield
    finally:
        await fanout.stop()


async def _ai_ctx(app: web.Application) -> AsyncIterator[None]:
    """Memo's provider (the local responder unless an OpenAI-compatible server is set)."""
    provider = provider_for(app[SETTINGS])
    try:
        app[SERVICES].ai = AIRuntime(provider=provider, hooks=ServerAIHooks(app))
        yield
    finally:
        await provider.aclose()


async def _files_ctx(app: web.Application) -> AsyncIterator[None]:
    """Files and voice: the blob stores (local, and S3 when configured) and the recognizer."""
    services = app[SERVICES]
    await files_setup.open_stores(services)
    try:
        yield
    finally:
        await files_setup.close_stores(services)


async def _search_ctx(app: web.Application) -> AsyncIterator[None]:
    """Search: the embedder and the vector store (pgvector or Pinecone), when configured."""
    services = app[SERVICES]
    services.search = await open_search(app[SETTINGS], services.store)
    sweeper = None
    if services.search.semantic:  # this node embeds the queue, woken by its own writes
        sweeper = search_jobs.EmbedSweeper(services.store, services.search)
        services.wake_embedding = sweeper.wake
        sweeper.start()
    try:
        yield
    finally:
        services.wake_embedding = _nothing
        if sweeper is not None:
            await sweeper.stop()
        await close_search(services.search)


def _nothing() -> None:
    pass


async def _acks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Batched device acks, and the /ws endpoint that records them."""
    settings, services = app[SETTINGS], app[SERVICES]
    app[ACKS] = acks = AckWriter(services.store.devices, settings.ack_flush_interval)
    acks.start()
    try:
        app[SOCKETS] = SocketServer(settings, services, app[HUB], app[METRICS], acks)
        yield
    finally:
        await acks.stop()  # saves what is pending


async def _pruner_ctx(app: web.Application) -> AsyncIterator[None]:
    events = app[SERVICES].store.events
    pruner = asyncio.create_task(prune_events(events, app[SETTINGS]), name="pruner")
    try:
        yield
    finally:
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner


async def _jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The durable job runner, with the job kinds of every capability on this node."""
    services = app[SERVICES]
    app[JOBS] = jobs = JobRunner(services.store.jobs)
    services.wake_jobs = jobs.wake
    jobs.register(AI_REPLY, ai_reply.job_handler(services))
    if services.whatsapp is not None:  # only nodes configured for WhatsApp run its jobs
        for kind, handler in whatsapp.job_handlers(services).items():
            jobs.register(kind, handler)
    files_setup.register_jobs(services, jobs)
    if services.search.semantic:  # embeddings, where an embedder and a vector store are set
        jobs.register(search_jobs.EMBED, search_jobs.job_handler(services))
    jobs.start()
    try:
        yield
    finally:
        await jobs.stop()


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
    )


async def _shutdown(app: web.Application) -> None:
    """SIGTERM/SIGINT: /ready turns 503, sockets drain and close with 1012, acks are saved."""
    app[SHUTTING_DOWN].set()
    sockets = app.get(SOCKETS)
    if sockets is not None:
        await sockets.shutdown(deadline=app[SETTINGS].shutdown_timeout / 2)


@undocumented("the WebSocket endpoint, not an OpenAPI operation (docs/protocol.md)")
async def _websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[SOCKETS].handle(request)
