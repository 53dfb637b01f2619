"""What the OpenAPI document says of each route, declared where the route is registered.

A routes module makes one `Routes` table and describes every handler as it registers it::

    routes = Routes(tag="Memories")

    @routes.get(
        "/api/memories/{id}",
        Op("getMemory", "One memory", response=MemoryResponse, permission=READ_MEMORIES),
    )
    async def get_memory(request: web.Request) -> web.Response:
        ...
        return json_response(MemoryResponse(memory=memory))

``app.add_routes(routes)`` registers the table like an aiohttp ``RouteTableDef``, and
`memoryd.server.openapi` builds the document from the routes registered on the app, so
a route and its description cannot part. A route that is not an API operation (the web
app's files, ``/``) says so with ``Undocumented("why")`` instead of an `Op` (or
``@undocumented("why")`` on a handler added with ``app.router``); static resources
(``routes.static``) are never in the document. Building the document fails, naming the
route, when a route has neither. docs/architecture.md §18 "Adding a route" has the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from memoryd.handlers.rbac import Permission

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Header:
    """A header an operation reads (`Op.reads`) or sends with its success (`Op.sends`).

    ``schema`` is a type (its JSON Schema, ``| None`` left out) or a JSON Schema dict.
    """

    name: str
    description: str
    schema: Any
    required: bool = False


@dataclass(frozen=True)
class Op:
    """One operation. The errors it can answer are mostly derived from these facts: a
    body means 400/413/415, a query 400, ``auth`` 401, a permission 403, an id in the path
    404, a rate limit 429; ``errors`` adds the rest."""

    operation_id: str
    summary: str
    response: Any = None  # a struct or a JSON Schema for the success body; None: no body
    status: int = 200
    body: Any = None  # a struct (or a JSON Schema) for the request body
    query: type[msgspec.Struct] | None = None  # a struct whose fields are the query parameters
    auth: bool = True  # bearer token; counts against the per-user "api" limit
    permission: Permission | None = None
    limit: str | None = None  # the per-IP limit of an unauthenticated route
    errors: tuple[int, ...] = ()  # beyond those implied by the fields above
    body_media: tuple[str, ...] = ("application/json",)
    media: str = "application/json"  # of the success body
    also: tuple[tuple[int, str, Any], ...] = ()  # more non-error responses: status, text, body
    reads: tuple[Header, ...] = ()  # request headers beyond X-Request-Id
    sends: tuple[Header, ...] = ()  # success headers beyond X-Request-Id and the rate limit
    notes: str = ""  # the operation's description (Markdown)
    tag: str = ""  # the table's tag when empty


@dataclass(frozen=True)
class Undocumented:
    """Marks a route that is not an API operation; ``reason`` says why, for the reader."""

    reason: str


_OPERATIONS: dict[Handler, Op] = {}
_UNDOCUMENTED: dict[Handler, Undocumented] = {}
TAG_DESCRIPTIONS: dict[str, str] = {}  # from `Routes(about=...)`


def describe(handler: Handler, what: Op | Undocumented, tag: str = "") -> None:
    """Attach ``what`` to a handler registered some other way (``app.router.add_get``).

    Raises:
        ValueError: the handler is already described otherwise (one handler, two routes).
    """
    if isinstance(what, Op) and not what.tag:
        what = replace(what, tag=tag)
    if _OPERATIONS.get(handler, what) != what or _UNDOCUMENTED.get(handler, what) != what:
        raise ValueError(f"{handler.__qualname__} is described twice; give each route its own")
    if isinstance(what, Undocumented):
        _UNDOCUMENTED[handler] = what
    else:
        _OPERATIONS[handler] = what


def undocumented(reason: str) -> Callable[[Handler], Handler]:
    """Decorator form of ``describe(handler, Undocumented(reason))``."""

    def mark(handler: Handler) -> Handler:
        describe(handler, Undocumented(reason))
        return handler

    return mark


def operation_of(route: web.AbstractRoute) -> Op | Undocumented | None:
    """The description of a registered route; None when it has none (a mistake)."""
    if isinstance(route.resource, web.StaticResource):
        return Undocumented("static files")
    handler = route.handler
    return _OPERATIONS.get(handler) or _UNDOCUMENTED.get(handler)


class Routes:
    """An aiohttp route table whose every route is described (pass it to ``add_routes``)."""

    def __init__(self, tag: str, about: str = "") -> None:
        """``tag``: of every route without its own; ``about``: the tag's description."""
        self.tag = tag
        self._table = web.RouteTableDef()
        if about:
            TAG_DESCRIPTIONS[tag] = about

    def __iter__(self) -> Iterator[web.AbstractRouteDef]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def route(
        self, method: str, path: str, what: Op | Undocumented
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            describe(handler, what, self.tag)
            self._table.route(method, path)(handler)
            return handler

        return register

    def get(self, path: str, what: Op | Undocumented) -> Callable[[Handler], Handler]:
        return self.route("GET", path, what)

    def post(self, path: str, what: Op | Undocumented) -> Callable[[Handler], Handler]:
        return self.route("POST", path, what)

    def put(self, path: str, what: Op | Undocumented) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, what)

    def patch(self, path: str, what: Op | Undocumented) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, what)

    def delete(self, path: str, what: Op | Undocumented) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, what)

    def static(self, prefix: str, path: str | Path, **kwargs: Any) -> None:
        """Files under ``path`` served at ``prefix``; never part of the API document."""
        self._table.static(prefix, path, **kwargs)
