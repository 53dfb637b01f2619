"""/api/ai: the seed plan's chat, categorize and summarize operations."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from aiohttp import web

from memoryd.handlers.context import Caller
from memoryd.handlers.memo import tools as ai
from memoryd.handlers.rbac import Permission
from memoryd.protocol.ai import (
    CategorizeRequest,
    CategorizeResponse,
    ChatRequest,
    ChatResponse,
    SummarizeRequest,
    SummarizeResponse,
)
from memoryd.protocol.validation import parse
from memoryd.server.http import apply_limit, caller, json_response, read_body, services
from memoryd.server.operations import Op, Routes

routes = Routes(tag="AI")

T = TypeVar("T", bound=msgspec.Struct)


async def _ai_caller(request: web.Request) -> Caller:
    """The caller, allowed to use AI, counted against the per-user ``ai`` limit."""
    who = await caller(request)
    who.require(Permission.ACCESS_AI)
    await apply_limit(request, "ai", str(who.user_id))
    return who


async def _body(request: web.Request, model: type[T]) -> T:
    return parse(model, await read_body(request))


@routes.post(
    "/api/ai/chat",
    Op(
        "aiChat",
        "Ask Memo",
        body=ChatRequest,
        response=ChatResponse,
        permission=Permission.ACCESS_AI,
        errors=(404, 502, 503),
        notes="Memo answers from the thread of `memoryId` (404 when it is not the caller's) "
        "and the caller's most relevant memories (full text search); `context` is any JSON "
        "the app adds. Nothing is stored in a thread. `confidence` is the mean token "
        "probability when the AI server reports log-probabilities, else a rough value from "
        "how the answer ended; `suggestions` are titles of the memories used. Without "
        "OPENAI_API_KEY / OPENAI_BASE_URL the local responder answers (model "
        "`memoryd-local`): it quotes the caller's own matching writing and says so. "
        "Counts against the `ai` limit (MEMORYD_RATE_LIMIT_AI); 429 also when "
        "MEMORYD_AI_MAX_CONCURRENT calls are in progress.",
    ),
)
async def chat(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, ChatRequest)
    return json_response(await ai.chat(services(request), who, req))


@routes.post(
    "/api/ai/categorize",
    Op(
        "aiCategorize",
        "Suggest a category",
        body=CategorizeRequest,
        response=CategorizeResponse,
        permission=Permission.ACCESS_AI,
        errors=(502, 503),
        notes="Compares the content with each category (its name, and the titles, "
        "descriptions and tags of its memories when it is one of the caller's) by cosine "
        "similarity of embeddings (hashed word vectors for the local responder); "
        "confidences are a softmax over the similarities. Without `existingCategories`, the "
        "caller's categories. Counts against the `ai` limit.",
    ),
)
async def categorize(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, CategorizeRequest)
    return json_response(await ai.categorize(services(request), who, req))


@routes.post(
    "/api/ai/summarize",
    Op(
        "aiSummarize",
        "Summarize text",
        body=SummarizeRequest,
        response=SummarizeResponse,
        permission=Permission.ACCESS_AI,
        errors=(502, 503),
        notes="`maxLength` is in words; `wordCount` counts the summary's words. The local "
        "responder extracts the most central sentences. Counts against the `ai` limit.",
    ),
)
async def summarize(request: web.Request) -> web.Response:
    who = await _ai_caller(request)
    req = await _body(request, SummarizeRequest)
    return json_response(await ai.summarize(services(request), who, req))
