"""/api/auth/* and /api/users/me."""

from __future__ import annotations

from aiohttp import web

from memoryd.handlers import auth, users
from memoryd.protocol import auth as bodies
from memoryd.protocol.responses import UserResponse
from memoryd.protocol.validation import parse
from memoryd.server.http import apply_limit, caller, client_ip, json_response, read_body, services
from memoryd.server.operations import Op, Routes

routes = Routes(tag="Auth")

_FORM = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


@routes.post(
    "/api/auth/register",
    Op(
        "register",
        "Create an account",
        body=bodies.RegisterRequest,
        response=bodies.AuthResult,
        status=201,
        auth=False,
        limit="auth",
        errors=(409,),
        notes="The new user gets the eight default categories.",
    ),
)
async def register(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    req = parse(bodies.RegisterRequest, await read_body(request))
    return json_response(await auth.register(services(request), req), status=201)


@routes.post(
    "/api/auth/login",
    Op(
        "login",
        "Log in with email and password",
        body=bodies.LoginRequest,
        body_media=_FORM,
        response=bodies.AuthResult,
        auth=False,
        limit="auth",
        errors=(401,),
        notes="Also accepts a form, where `rememberMe` is true for 1, true, on or yes. "
        "A wrong email or password is 401 `invalid_credentials`.",
    ),
)
async def login(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    body = await read_body(request, allow_form=True)
    if isinstance(body, dict) and isinstance(body.get("rememberMe"), str):  # from a form
        body["rememberMe"] = body["rememberMe"].lower() in ("1", "true", "on", "yes")
    req = parse(bodies.LoginRequest, body)
    return json_response(await auth.login(services(request), req))


@routes.post(
    "/api/auth/refresh",
    Op(
        "refreshToken",
        "Rotate a refresh token",
        body=bodies.RefreshRequest,
        response=bodies.AuthResult,
        auth=False,
        limit="auth",
        errors=(401,),
        notes="Each refresh token works once; using one twice revokes every token of its "
        "login (401 `token_reused`).",
    ),
)
async def refresh(request: web.Request) -> web.Response:
    # A refresh proves possession of a signed token; it is not a password guess, so it
    # counts against the general API limit (per IP: several devices may share one).
    await apply_limit(request, "api", f"refresh:{client_ip(request)}")
    req = parse(bodies.RefreshRequest, await read_body(request))
    return json_response(await auth.refresh(services(request), req))


@routes.post(
    "/api/auth/logout",
    Op(
        "logout",
        "Log out",
        body=bodies.LogoutRequest,
        status=204,
        notes="Revokes the login of the given `refreshToken`, or every login of the caller "
        "with `allDevices` or without a token. Access tokens stay valid until they expire.",
    ),
)
async def logout(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(bodies.LogoutRequest, await read_body(request))
    await auth.logout(services(request), who, req)
    return web.Response(status=204)


@routes.post(
    "/api/auth/oauth/google",
    Op(
        "googleSignIn",
        "Sign in with Google",
        body=bodies.OAuthRequest,
        response=bodies.OAuthResult,
        auth=False,
        limit="auth",
        errors=(401, 501, 502),
        notes="Exchanges an authorization code; links an existing account with the same "
        "verified email. 501 when GOOGLE_CLIENT_ID is not set.",
    ),
)
async def google(request: web.Request) -> web.Response:
    await apply_limit(request, "auth", client_ip(request))
    req = parse(bodies.OAuthRequest, await read_body(request))
    return json_response(await auth.google_sign_in(services(request), req))


@routes.get(
    "/api/users/me",
    Op("getMe", "The caller's profile", response=UserResponse, errors=(404,), tag="Users"),
)
async def get_me(request: web.Request) -> web.Response:
    who = await caller(request)
    return json_response(UserResponse(user=await users.get_me(services(request), who)))


@routes.patch(
    "/api/users/me",
    Op(
        "updateMe",
        "Update the caller's profile",
        body=bodies.UpdateProfileRequest,
        response=UserResponse,
        errors=(404, 409),
        tag="Users",
    ),
)
async def update_me(request: web.Request) -> web.Response:
    who = await caller(request)
    req = parse(bodies.UpdateProfileRequest, await read_body(request))
    return json_response(UserResponse(user=await users.update_me(services(request), who, req)))
