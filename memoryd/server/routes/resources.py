"""/api/categories, /api/memories and their messages."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memoryd.handlers import categories, memories, messages
from memoryd.handlers.fields import parse_id
from memoryd.handlers.memo import threads as ai
from memoryd.protocol import requests
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, read_body, services

routes = web.RouteTableDef()


def _query(request: web.Request, *, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """Query parameters as a dict; list parameters accept repeats and commas (tags=a,b)."""
    query: dict[str, Any] = {}
    for key in request.query:
        name = key.removesuffix("[]")
        if name in lists:
            values = request.query.getall(key)
            query[name] = [t.strip() for v in values for t in v.split(",") if t.strip()]
        else:
            query[name] = request.query[key]
    return query


def _path_id(request: web.Request, name: str, what: str) -> Any:
    return parse_id(request.match_info[name], what)


# -- categories -------------------------------------------------------------------------


@routes.get("/api/categories")
async def list_categories(request: web.Request) -> web.Response:
    who = await caller(request)
    return json_response({"categories": await categories.list_categories(services(request), who)})


@routes.post("/api/categories")
async def create_category(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.CreateCategoryRequest, await read_body(request))
    category = await categories.create_category(services(request), who, req)
    return json_response({"category": category}, status=201)


@routes.patch("/api/categories/{id}")
async def update_category(request: web.Request) -> web.Response:
    who = await caller(request)
    category_id = _path_id(request, "id", "Category")
    req = parse(requests.UpdateCategoryRequest, await read_body(request))
    category = await categories.update_category(services(request), who, category_id, req)
    return json_response({"category": category})


@routes.delete("/api/categories/{id}")
async def delete_category(request: web.Request) -> web.Response:
    who = await caller(request)
    await categories.delete_category(services(request), who, _path_id(request, "id", "Category"))
    return web.Response(status=204)


# -- memories ---------------------------------------------------------------------------


@routes.get("/api/memories")
async def list_memories(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.ListMemoriesRequest, _query(request, lists=("tags",)), strict=False)
    return json_response(await memories.list_memories(services(request), who, req))


@routes.post("/api/memories")
async def create_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.CreateMemoryRequest, await read_body(request))
    memory = await memories.create_memory(services(request), who, req)
    return json_response({"memory": memory}, status=201)


@routes.get("/api/memories/{id}")
async def get_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    memory = await memories.get_memory(services(request), who, _path_id(request, "id", "Memory"))
    return json_response({"memory": memory})


@routes.patch("/api/memories/{id}")
async def update_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.UpdateMemoryRequest, await read_body(request))
    memory = await memories.update_memory(services(request), who, memory_id, req)
    return json_response({"memory": memory})


@routes.delete("/api/memories/{id}")
async def delete_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    await memories.delete_memory(services(request), who, _path_id(request, "id", "Memory"))
    return web.Response(status=204)


@routes.post("/api/memories/{id}/read")
async def mark_read(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.MarkReadRequest, await read_body(request))
    marker = await memories.mark_read(services(request), who, memory_id, req.seq)
    return json_response({"read": marker})


# -- messages ---------------------------------------------------------------------------


@routes.get("/api/memories/{id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.ListMessagesRequest, _query(request), strict=False)
    return json_response(await messages.list_messages(services(request), who, memory_id, req))


@routes.post("/api/memories/{id}/messages")
async def send_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    body = await read_body(request)
    key = request.headers.get("Idempotency-Key")
    if key and isinstance(body, dict):
        body.setdefault("clientMsgId", key)
    req = parse(requests.SendMessageRequest, body)
    svc = services(request)
    result = await messages.send_message(svc, who, memory_id, req)
    headers = None if result.created else {"Idempotent-Replayed": "true"}
    answer: dict[str, Any] = {"message": result.message}
    if req.ai:  # the seed's {message, aiResponse} when Memo answers within the wait
        reply = await ai.wait_for_reply(svc, who, result.message, svc.settings.ai_reply_wait)
        if reply is not None:
            answer["aiResponse"] = reply
    return json_response(answer, status=201, headers=headers)


@routes.get("/api/memories/{id}/messages/{messageId}")
async def get_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    message = await messages.get_message(services(request), who, message_id, memory_id)
    return json_response({"message": message})


@routes.patch("/api/memories/{id}/messages/{messageId}")
async def edit_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    req = parse(requests.EditMessageRequest, await read_body(request))
    message = await messages.edit_message(services(request), who, message_id, req, memory_id)
    return json_response({"message": message})


@routes.delete("/api/memories/{id}/messages/{messageId}")
async def delete_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    await messages.delete_message(services(request), who, message_id, memory_id)
    return web.Response(status=204)
