"""Registration, login, token refresh and rotation, logout, Google sign-in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from memoryd.errors import ClientError, Unauthorized
from memoryd.handlers.context import Caller, Services
from memoryd.handlers.passwords import hash_password, needs_rehash, verify_password
from memoryd.handlers.tokens import AccessClaims

# REST bodies live in protocol/; re-exported for the routes that name them through here
from memoryd.protocol.auth import (
    AuthResult,
    OAuthResult,
)
from memoryd.protocol.auth import (
    LoginRequest as LoginRequest,
)
from memoryd.protocol.auth import (
    LogoutRequest as LogoutRequest,
)
from memoryd.protocol.auth import (
    OAuthRequest as OAuthRequest,
)
from memoryd.protocol.auth import (
    RefreshRequest as RefreshRequest,
)
from memoryd.protocol.auth import (
    RegisterRequest as RegisterRequest,
)
from memoryd.protocol.models import User
from memoryd.storage.users import NewCategory

DEFAULT_CATEGORIES = (
    NewCategory("Work", "briefcase", "#3B82F6"),
    NewCategory("Personal", "user", "#8B5CF6"),
    NewCategory("Family", "home", "#EC4899"),
    NewCategory("Learning", "book", "#10B981"),
    NewCategory("Travel", "plane", "#F59E0B"),
    NewCategory("Health", "heart", "#EF4444"),
    NewCategory("Finance", "dollar-sign", "#14B8A6"),
    NewCategory("Creative", "palette", "#F97316"),
)


_BAD_CREDENTIALS = "Invalid email or password"


async def _issue_pair(svc: Services, user: User) -> AuthResult:
    family = uuid.uuid4()
    refresh = svc.tokens.issue_refresh(user.id, family)
    await svc.store.refresh_tokens.issue(
        jti=refresh.jti, family_id=family, user_id=user.id, expires_at=refresh.expires_at
    )
    return AuthResult(
        user=user, access_token=svc.tokens.issue_access(user), refresh_token=refresh.token
    )


async def register(svc: Services, req: RegisterRequest) -> AuthResult:
    user = await svc.store.users.create(
        email=req.email.strip(),
        password_hash=await hash_password(req.password),
        first_name=req.first_name,
        last_name=req.last_name,
        username=req.username,
        default_categories=DEFAULT_CATEGORIES,
    )
    return await _issue_pair(svc, user)


async def login(svc: Services, req: LoginRequest) -> AuthResult:
    found = await svc.store.users.credentials(req.email.strip())
    # Same message, same work, whether the email is unknown or the password wrong.
    ok = await verify_password(found.password_hash if found else None, req.password)
    if found is None or not ok:
        raise Unauthorized(_BAD_CREDENTIALS, code="invalid_credentials")
    if not found.user.is_active:
        raise Unauthorized("This account is disabled", code="account_disabled")
    if found.password_hash and needs_rehash(found.password_hash):
        await svc.store.users.set_password_hash(found.user.id, await hash_password(req.password))
    now = datetime.now(UTC)
    await svc.store.users.touch_login(found.user.id, now)
    user = msgspec.structs.replace(found.user, last_login_at=now)
    return await _issue_pair(svc, user)


async def refresh(svc: Services, req: RefreshRequest) -> AuthResult:
    """Rotate a refresh token. A token used twice revokes its whole family."""
    claims = svc.tokens.verify_refresh(req.refresh_token)
    issued = svc.tokens.issue_refresh(claims.user_id, claims.family_id)
    use = await svc.store.refresh_tokens.rotate(
        jti=claims.jti, new_jti=issued.jti, expires_at=issued.expires_at
    )
    if use.status == "reused":
        raise Unauthorized(
            "Refresh token was already used; all sessions of this login were revoked",
            code="token_reused",
        )
    if use.status != "ok":
        raise Unauthorized("Invalid refresh token", code="invalid_token")
    user = await svc.store.users.get(claims.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("Invalid refresh token", code="invalid_token")
    return AuthResult(
        user=user, access_token=svc.tokens.issue_access(user), refresh_token=issued.token
    )


async def logout(svc: Services, caller: Caller, req: LogoutRequest) -> None:
    """Revoke the given refresh token's family, or every refresh token of the caller."""
    if req.all_devices or req.refresh_token is None:
        await svc.store.refresh_tokens.revoke_all(caller.user_id, "logout")
        return
    try:
        claims = svc.tokens.verify_refresh(req.refresh_token)
    except Unauthorized:
        return  # an expired or foreign token: nothing of this user's to revoke
    family = await svc.store.refresh_tokens.family_of(claims.jti, caller.user_id)
    if family is not None:
        await svc.store.refresh_tokens.revoke_family(family, "logout")


async def google_sign_in(svc: Services, req: OAuthRequest) -> OAuthResult:
    if svc.google is None:
        raise ClientError(
            "Google sign-in is not configured on this server (GOOGLE_CLIENT_ID)",
            code="oauth_not_configured",
            status=501,
        )
    identity = await svc.google.exchange(req.code, req.redirect_uri)
    users = svc.store.users
    user = await users.get_by_google_sub(identity.sub)
    is_new = False
    if user is None:
        user = await users.get_by_email(identity.email)
        if user is not None:  # Google verified this email: link the existing account
            # Nobody proved owning this address before: whoever registered it may not be
            # its owner, so their password and sessions end here.
            takeover_risk = not user.is_verified
            await users.link_google(user.id, identity.sub, drop_password=takeover_risk)
            if takeover_risk:
                await svc.store.refresh_tokens.revoke_all(user.id, "email_verified_by_google")
            user = msgspec.structs.replace(user, is_verified=True)
        else:
            user = await users.create(
                email=identity.email,
                password_hash=None,
                first_name=identity.given_name,
                last_name=identity.family_name,
                google_sub=identity.sub,
                is_verified=True,
                avatar_url=identity.picture,
                default_categories=DEFAULT_CATEGORIES,
            )
            is_new = True
    if not user.is_active:
        raise Unauthorized("This account is disabled", code="account_disabled")
    now = datetime.now(UTC)
    await users.touch_login(user.id, now)
    pair = await _issue_pair(svc, msgspec.structs.replace(user, last_login_at=now))
    return OAuthResult(
        user=pair.user,
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        is_new_user=is_new,
    )


def caller_from_claims(claims: AccessClaims, device_id: UUID | None = None) -> Caller:
    return Caller(
        user_id=claims.user_id,
        email=claims.email,
        role=claims.role,
        permissions=claims.permissions,
        device_id=device_id,
    )


async def authenticate(svc: Services, token: str) -> Caller:
    return caller_from_claims(svc.tokens.verify_access(token))
