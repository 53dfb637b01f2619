"""/api/ai: the seed plan's chat, categorize and summarize operations."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memoryd.handlers.context import Caller
from memoryd.handlers.memo import tools as ai
from memoryd.handlers.rbac import Permission
from memoryd.protocol.ai import CategorizeRequest, ChatRequest, SummarizeRequest
from memoryd.protocol.validation import parse
from memoryd.server.http import apply_limit, caller, json_response, read_body, services

routes = web.RouteTableDef()


async def _ai_caller(request: web.Request) -> Caller:
    """The caller, allowed to use AI, counted against the per-user ``ai`` limit."""
    who = await caller(request)
    who.require(Permission.ACCESS_AI)
    await apply_limit(request, "ai", str(who.user_id))
    return who


async def _body(request: web.Request, model: Any) -> Any:
    return parse(model, await read_body(request))


@routes.post("/api/ai/chat")
async def chat(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, ChatRequest)
    return json_response(await ai.chat(services(request), who, req))


@routes.post("/api/ai/categorize")
async def categorize(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, CategorizeRequest)
    return json_response(await ai.categorize(services(request), who, req))


@routes.post("/api/ai/summarize")
async def summarize(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, SummarizeRequest)
    return json_response(await ai.summarize(services(request), who, req))
