"""GET /api/search: the caller's memories by what was said in them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from memoryd.handlers import search
from memoryd.protocol.search import SearchRequest
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, services

routes = web.RouteTableDef()


def _query(request: web.Request) -> dict[str, Any]:
    """Query parameters; ``tags`` accepts repeats and commas (tags=a,b)."""
    query: dict[str, Any] = {}
    for key in request.query:
        name = key.removesuffix("[]")
        if name == "tags":
            values = request.query.getall(key)
            query[name] = [t.strip() for v in values for t in v.split(",") if t.strip()]
        else:
            query[name] = request.query[key]
    return query


@routes.get("/api/search")
async def search_memories(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(SearchRequest, _query(request), strict=False)
    return json_response(await search.search(services(request), who, req))
