"""/api/auth/* and /api/users/me."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers import auth, users
from memoryd.protocol.validation import parse
from memoryd.server.http import apply_limit, caller, client_ip, json_response, read_body, services

routes = web.RouteTableDef()


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    req = parse(auth.RegisterRequest, await read_body(request))
    return json_response(await auth.register(services(request), req), status=201)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    body = await read_body(request, allow_form=True)
    if isinstance(body, dict) and isinstance(body.get("rememberMe"), str):  # from a form
        body["rememberMe"] = body["rememberMe"].lower() in ("1", "true", "on", "yes")
    req = parse(auth.LoginRequest, body)
    return json_response(await auth.login(services(request), req))


@routes.post("/api/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    # A refresh proves possession of a signed token; it is not a password guess, so it
    # counts against the general API limit (per IP: several devices may share one).
    await apply_limit(request, "api", f"refresh:{client_ip(request)}")
    req = parse(auth.RefreshRequest, await read_body(request))
    return json_response(await auth.refresh(services(request), req))


@routes.post("/api/auth/logout")
async def logout(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(auth.LogoutRequest, await read_body(request))
    await auth.logout(services(request), who, req)
    return web.Response(status=204)


@routes.post("/api/auth/oauth/google")
async def google(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    req = parse(auth.OAuthRequest, await read_body(request))
    return json_response(await auth.google_sign_in(services(request), req))


@routes.get("/api/users/me")
async def get_me(request: web.Request) -> web.Response:
    who = await caller(request)
    return json_response({"user": await users.get_me(services(request), who)})


@routes.patch("/api/users/me")
async def update_me(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(users.UpdateProfileRequest, await read_body(request))
    return json_response({"user": await users.update_me(services(request), who, req)})
