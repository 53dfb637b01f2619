"""/api/categories, /api/memories and their messages."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from memoryd.handlers import categories, memories, messages
from memoryd.handlers.fields import parse_id
from memoryd.handlers.memo import threads as ai
from memoryd.handlers.rbac import Permission
from memoryd.protocol import requests
from memoryd.protocol.requests import MemoryPage, MessagePage
from memoryd.protocol.responses import (
    CategoryList,
    CategoryResponse,
    MemoryResponse,
    MessageResponse,
    ReadResponse,
    SentMessage,
)
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, query_params, read_body, services
from memoryd.server.operations import Header, Op, Routes

routes = Routes(tag="Memories")

_READ, _WRITE, _DELETE = (
    Permission.READ_MEMORIES,
    Permission.WRITE_MEMORIES,
    Permission.DELETE_MEMORIES,
)


def _path_id(request: web.Request, name: str, what: str) -> UUID:
    return parse_id(request.match_info[name], what)


# -- categories -------------------------------------------------------------------------


@routes.get(
    "/api/categories",
    Op(
        "listCategories",
        "The caller's categories",
        response=CategoryList,
        permission=_READ,
        tag="Categories",
    ),
)
async def list_categories(request: web.Request) -> web.Response:
    who = await caller(request)
    found = await categories.list_categories(services(request), who)
    return json_response(CategoryList(categories=found))


@routes.post(
    "/api/categories",
    Op(
        "createCategory",
        "Create a category",
        body=requests.CreateCategoryRequest,
        response=CategoryResponse,
        status=201,
        permission=_WRITE,
        errors=(409,),
        tag="Categories",
    ),
)
async def create_category(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.CreateCategoryRequest, await read_body(request))
    category = await categories.create_category(services(request), who, req)
    return json_response(CategoryResponse(category=category), status=201)


@routes.patch(
    "/api/categories/{id}",
    Op(
        "updateCategory",
        "Update a category",
        body=requests.UpdateCategoryRequest,
        response=CategoryResponse,
        permission=_WRITE,
        errors=(409,),
        tag="Categories",
    ),
)
async def update_category(request: web.Request) -> web.Response:
    who = await caller(request)
    category_id = _path_id(request, "id", "Category")
    req = parse(requests.UpdateCategoryRequest, await read_body(request))
    category = await categories.update_category(services(request), who, category_id, req)
    return json_response(CategoryResponse(category=category))


@routes.delete(
    "/api/categories/{id}",
    Op(
        "deleteCategory",
        "Delete a category",
        status=204,
        permission=_WRITE,
        notes="Its memories are kept, without a category.",
        tag="Categories",
    ),
)
async def delete_category(request: web.Request) -> web.Response:
    who = await caller(request)
    await categories.delete_category(services(request), who, _path_id(request, "id", "Category"))
    return web.Response(status=204)


# -- memories ---------------------------------------------------------------------------


@routes.get(
    "/api/memories",
    Op(
        "listMemories",
        "Search and page the caller's memories",
        query=requests.ListMemoriesRequest,
        response=MemoryPage,
        permission=_READ,
        notes="`search` looks in the title, description, tags and the text of `content`, "
        "and in the memory's messages (full text in the user's language, typos tolerated); "
        "`tags` keeps the memories that carry every tag given. Unknown parameters are 400.",
    ),
)
async def list_memories(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.ListMemoriesRequest, query_params(request, lists=("tags",)), strict=False)
    return json_response(await memories.list_memories(services(request), who, req))


@routes.post(
    "/api/memories",
    Op(
        "createMemory",
        "Create a memory",
        body=requests.CreateMemoryRequest,
        response=MemoryResponse,
        status=201,
        permission=_WRITE,
    ),
)
async def create_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(requests.CreateMemoryRequest, await read_body(request))
    memory = await memories.create_memory(services(request), who, req)
    return json_response(MemoryResponse(memory=memory), status=201)


@routes.get(
    "/api/memories/{id}",
    Op(
        "getMemory",
        "One memory",
        response=MemoryResponse,
        permission=_READ,
    ),
)
async def get_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    memory = await memories.get_memory(services(request), who, _path_id(request, "id", "Memory"))
    return json_response(MemoryResponse(memory=memory))


@routes.patch(
    "/api/memories/{id}",
    Op(
        "updateMemory",
        "Update a memory",
        body=requests.UpdateMemoryRequest,
        response=MemoryResponse,
        permission=_WRITE,
    ),
)
async def update_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.UpdateMemoryRequest, await read_body(request))
    memory = await memories.update_memory(services(request), who, memory_id, req)
    return json_response(MemoryResponse(memory=memory))


@routes.delete(
    "/api/memories/{id}",
    Op(
        "deleteMemory",
        "Delete a memory and its messages",
        status=204,
        permission=_DELETE,
    ),
)
async def delete_memory(request: web.Request) -> web.Response:
    who = await caller(request)
    await memories.delete_memory(services(request), who, _path_id(request, "id", "Memory"))
    return web.Response(status=204)


@routes.post(
    "/api/memories/{id}/read",
    Op(
        "markMemoryRead",
        "Mark messages read",
        body=requests.MarkReadRequest,
        response=ReadResponse,
        permission=_READ,
        notes="Messages with `seq` up to the given one are read on every device; the marker "
        "never moves back (the answer carries the marker in force).",
    ),
)
async def mark_read(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.MarkReadRequest, await read_body(request))
    marker = await memories.mark_read(services(request), who, memory_id, req.seq)
    return json_response(ReadResponse(read=marker))


# -- messages ---------------------------------------------------------------------------

_IDEMPOTENCY_KEY = Header(
    "Idempotency-Key", "Used as the body's `clientMsgId` when it has none.", requests.ClientMsgId
)
_REPLAYED = Header(
    "Idempotent-Replayed",
    "`true` when the message had been sent before and was returned again.",
    {"type": "string", "enum": ["true"]},
)
_SEND_NOTES = (
    "Idempotent: a `clientMsgId` seen before (the `Idempotency-Key` header stands for it "
    "when the body has none) returns the earlier message, with `Idempotent-Replayed: true`; "
    "one used in another memory is 409. `content` is limited to MEMORYD_MAX_CONTENT_CHARS "
    "characters (10000 by default). In a WhatsApp thread the message is stored `pending` and "
    "sent to the contact (text only, at most 4096 characters; it needs `sync:whatsapp`, and "
    "409 `whatsapp_not_connected` when the number was disconnected). With `ai: true` (it "
    "needs `access:ai` and counts against the `ai` limit) Memo replies in the thread: the "
    "answer waits up to MEMORYD_AI_REPLY_WAIT seconds (10) for the reply and includes it as "
    "`aiResponse`; a later reply arrives as a `message.created` event. A memory whose "
    "`metadata.memoAnswers` is true gets a reply to every message of an AI user."
)


@routes.get(
    "/api/memories/{id}/messages",
    Op(
        "listMessages",
        "Page a memory's messages",
        query=requests.ListMessagesRequest,
        response=MessagePage,
        permission=_READ,
        notes="Ordered by `seq`; `before` and `after` bound `createdAt` (exclusive). "
        "Unknown parameters are 400.",
        tag="Messages",
    ),
)
async def list_messages(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    req = parse(requests.ListMessagesRequest, query_params(request), strict=False)
    return json_response(await messages.list_messages(services(request), who, memory_id, req))


@routes.post(
    "/api/memories/{id}/messages",
    Op(
        "sendMessage",
        "Send a message",
        body=requests.SendMessageRequest,
        response=SentMessage,
        status=201,
        permission=_WRITE,
        errors=(409,),
        reads=(_IDEMPOTENCY_KEY,),
        sends=(_REPLAYED,),
        notes=_SEND_NOTES,
        tag="Messages",
    ),
)
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
    answer = SentMessage(message=result.message)
    if req.ai:  # the seed's {message, aiResponse} when Memo answers within the wait
        reply = await ai.wait_for_reply(svc, who, result.message, svc.settings.ai_reply_wait)
        if reply is not None:
            answer.ai_response = reply
    return json_response(answer, status=201, headers=headers)


@routes.get(
    "/api/memories/{id}/messages/{messageId}",
    Op(
        "getMessage",
        "One message",
        response=MessageResponse,
        permission=_READ,
        tag="Messages",
    ),
)
async def get_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    message = await messages.get_message(services(request), who, message_id, memory_id)
    return json_response(MessageResponse(message=message))


@routes.patch(
    "/api/memories/{id}/messages/{messageId}",
    Op(
        "editMessage",
        "Edit a message",
        body=requests.EditMessageRequest,
        response=MessageResponse,
        permission=_WRITE,
        tag="Messages",
    ),
)
async def edit_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    req = parse(requests.EditMessageRequest, await read_body(request))
    message = await messages.edit_message(services(request), who, message_id, req, memory_id)
    return json_response(MessageResponse(message=message))


@routes.delete(
    "/api/memories/{id}/messages/{messageId}",
    Op(
        "deleteMessage",
        "Delete a message",
        status=204,
        permission=_DELETE,
        tag="Messages",
    ),
)
async def delete_message(request: web.Request) -> web.Response:
    who = await caller(request)
    memory_id = _path_id(request, "id", "Memory")
    message_id = _path_id(request, "messageId", "Message")
    await messages.delete_message(services(request), who, message_id, memory_id)
    return web.Response(status=204)
