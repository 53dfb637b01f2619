"""The browser client: the chat app at ``/``, the JS SDK and its static files.

Files come from memoryd/web/static (package data), read once at start-up. Every answer
carries a strict Content-Security-Policy (no inline script or style, nothing from another
origin) and ``Cache-Control: no-cache`` with a content ETag, so a browser revalidates
each file cheaply and never runs a stale SDK against a newer server. These routes are
not part of the REST API and stay out of the OpenAPI document (`Undocumented`).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import PurePosixPath

from aiohttp import web

from memoryd.server.operations import Routes, Undocumented

routes = Routes(tag="Web app")
_NOT_API = Undocumented("the web app's files, not an API operation")

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",  # 'self' covers ws:// and wss:// of this origin
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",  # declarations, to read; no browser runs them
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}


class _File:
    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _load() -> dict[str, _File]:
    files: dict[str, _File] = {}
    root = resources.files("memoryd.web") / "static"

    def walk(node: object, prefix: PurePosixPath) -> None:
        for entry in node.iterdir():  # type: ignore[attr-defined]
            rel = prefix / entry.name
            if entry.is_dir():
                walk(entry, rel)
            elif entry.name.endswith(tuple(_TYPES)):
                suffix = ".ts" if entry.name.endswith(".d.ts") else PurePosixPath(entry.name).suffix
                files[str(rel)] = _File(entry.read_bytes(), _TYPES[suffix])

    walk(root, PurePosixPath())
    return files


_FILES = _load()


def _serve(request: web.Request, name: str) -> web.Response:
    found = _FILES.get(name)
    if found is None:
        raise web.HTTPNotFound(reason="No such file")
    headers = {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
        "ETag": found.etag,
    }
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = found.content_type
    return web.Response(body=found.body, headers=headers)


@routes.get("/", _NOT_API)
async def index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


@routes.get("/memoryd-client.js", _NOT_API)
async def sdk(request: web.Request) -> web.Response:
    return _serve(request, "memoryd-client.js")


@routes.get("/memoryd-client.d.ts", _NOT_API)
async def sdk_types(request: web.Request) -> web.Response:
    return _serve(request, "memoryd-client.d.ts")


@routes.get("/static/{path:[A-Za-z0-9_./-]+}", _NOT_API)
async def static(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    if ".." in path.split("/"):  # only names from the table are served anyway
        raise web.HTTPNotFound(reason="No such file")
    return _serve(request, path)
