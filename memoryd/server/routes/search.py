"""GET /api/search: the caller's memories by what was said in them."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers import search
from memoryd.handlers.rbac import Permission
from memoryd.protocol.search import SearchPage, SearchRequest
from memoryd.protocol.validation import parse
from memoryd.server.http import caller, json_response, query_params, services
from memoryd.server.operations import Op, Routes

routes = Routes(tag="Search")


@routes.get(
    "/api/search",
    Op(
        "search",
        "Find memories by what was said in them",
        response=SearchPage,
        query=SearchRequest,
        permission=Permission.READ_MEMORIES,
        notes="Memories with their matching messages (id, `seq`, a snippet with `<mark>`), "
        "best first. `mode`: `text` (full text in the user's language plus trigrams for "
        'typos and prefixes; `"a phrase"`, `or` and `-word` work as in web search), '
        "`semantic` (embeddings) or `hybrid` (both, fused by reciprocal rank), the default "
        "when the server has an embedder; `modes` in the answer says which were used. "
        "`semantic` without an embedder is 400 `semantic_unavailable`. `nextCursor` pages. "
        "Unknown parameters are 400.",
    ),
)
async def search_memories(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(SearchRequest, query_params(request, lists=("tags",)), strict=False)
    return json_response(await search.search(services(request), who, req))
