"""HTTP plumbing shared by the REST routes: bodies in, JSON out, errors, auth, limits."""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from memoryd.errors import (
    ClientError,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from memoryd.handlers.auth import authenticate
from memoryd.handlers.context import Caller, Services
from memoryd.logs import request_id
from memoryd.protocol.responses import Error, ErrorBody
from memoryd.server.keys import CALLER, LIMITERS, METRICS, RATE_DECISION, SERVICES
from memoryd.server.operations import Handler
from memoryd.server.ratelimit import Decision

log = logging.getLogger("memoryd.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # echoed and logged: keep it tame
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def json_response(
    data: msgspec.Struct | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer; routes pass the struct their `Op` documents as ``response``."""
    return web.Response(
        body=_encode(data), status=status, content_type="application/json", headers=headers
    )


def error_response(error: ClientError, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(error, RateLimited):  # also a limit raised by a handler, with no Decision
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after))), **(headers or {})}
    body = Error(error=ErrorBody(code=error.code, message=error.message, details=error.details))
    return json_response(body, error.status, headers)


async def read_body(request: web.Request, *, allow_form: bool = False) -> Any:
    """The request body as JSON (or, where allowed, a form); {} when there is none."""
    if not request.body_exists:
        return {}
    ctype = request.content_type
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            return _decode(raw)
        except msgspec.DecodeError as exc:
            raise ValidationFailed(
                "Malformed JSON body",
                code="invalid_json",
                details=[{"field": None, "message": str(exc)}],
            ) from None
    if allow_form and ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    accepted = "application/json" + (" or a form" if allow_form else "")
    raise UnsupportedMediaType(f"Content-Type must be {accepted}, not {ctype or 'none'}")


def query_params(request: web.Request, *, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """Query parameters as a dict for `parse` (with ``strict=False``, strings stand for
    numbers); the ``lists`` parameters accept repeats and commas (``tags=a,b``, ``tags[]``),
    as the document says of array parameters."""
    query: dict[str, Any] = {}
    for key in request.query:
        name = key.removesuffix("[]")
        if name in lists:
            values = request.query.getall(key)
            query[name] = [t.strip() for v in values for t in v.split(",") if t.strip()]
        else:
            query[name] = request.query[key]
    return query


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def caller(request: web.Request) -> Caller:
    """The authenticated caller; also counts the request against the per-user API limit."""
    found = request.get(CALLER)
    if found is not None:
        return found  # type: ignore[no-any-return]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authentication required", code="unauthorized")
    who = await authenticate(services(request), token.strip())
    request[CALLER] = who
    await apply_limit(request, "api", str(who.user_id))
    return who


def client_ip(request: web.Request) -> str:
    """The caller's address. Behind a trusted proxy, the last ``X-Forwarded-For`` entry:
    the one that proxy added. Entries to its left came with the request and may be
    forged (a proxy that appends keeps them)."""
    if services(request).settings.trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


async def apply_limit(request: web.Request, name: str, key: str) -> None:
    """Count a request against limit ``name``; raise `RateLimited` past it."""
    decision: Decision | None = await request.app[LIMITERS][name].check(key)
    if decision is None:
        return
    request[RATE_DECISION] = decision
    if not decision.allowed:
        request.app[METRICS].rate_limited_total.labels(name).inc()
        raise RateLimited(
            "Too many requests, please try again later",
            retry_after=decision.reset_after,
            details={"limit": name, "retryAfter": decision.retry_after},
        )


def _route_template(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, error rendering, metrics and one structured log line per request."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    token = request_id.set(rid)
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except ClientError as exc:
            response = error_response(exc)
        except web.HTTPRequestEntityTooLarge as exc:
            response = error_response(PayloadTooLarge(f"Request body is too large ({exc.text})"))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _STATUS_CODES.get(exc.status, "http_error")
            response = error_response(ClientError(exc.reason, code=code, status=exc.status))
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            response = error_response(
                ClientError("Internal server error", code="internal", status=500)
            )
        decision = request.get(RATE_DECISION)
        if decision is not None and not response.prepared:
            response.headers.update(decision.headers())
        if not response.prepared:
            response.headers["X-Request-Id"] = rid
        elapsed = time.perf_counter() - started
        route = _route_template(request)
        metrics = request.app[METRICS]
        labels = (request.method, route, str(response.status))
        metrics.http_request_duration.labels(*labels).observe(elapsed)
        metrics.http_requests_total.labels(*labels).inc()
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response
    finally:
        request_id.reset(token)
