"""Google sign-in: exchange an authorization code and verify the ID token it returns.

The ID token's RS256 signature is checked against Google's JWKS (cached, refetched on an
unknown ``kid``), and so are ``iss``, ``aud`` (our client id), ``exp`` and
``email_verified``. Endpoints are configurable so tests run against a local fake.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from memoryd.errors import ClientError, Unauthorized

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
_JWKS_TTL = 3600.0
# Google's clock and ours differ a little: without leeway a fresh ID token's ``iat`` can be
# "in the future" here and the sign-in fails at random ("Token used too early").
_CLOCK_SKEW = 60


@dataclass(frozen=True)
class GoogleIdentity:
    sub: str
    email: str
    given_name: str | None
    family_name: str | None
    picture: str | None


class GoogleUnavailable(ClientError):
    status = 502
    code = "oauth_provider_unavailable"


class GoogleOAuth:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        client_id: str,
        client_secret: str | None,
        token_url: str,
        jwks_url: str,
    ) -> None:
        self._session = session
        self.client_id = client_id
        self._client_secret = client_secret
        self._token_url = token_url
        self._jwks_url = jwks_url
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_fetched = 0.0

    async def exchange(self, code: str, redirect_uri: str) -> GoogleIdentity:
        form = {
            "code": code,
            "client_id": self.client_id,
            "client_secret": self._client_secret or "",
            "redirect_uri": redirect_uri,
            "grant_type": "authorization_code",
        }
        try:
            async with self._session.post(self._token_url, data=form) as resp:
                body: Any = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GoogleUnavailable(
                f"Google token endpoint unreachable: {type(exc).__name__}"
            ) from None
        if status >= 500 or not isinstance(body, dict):
            raise GoogleUnavailable(f"Google token endpoint answered {status} with no JSON object")
        if status != 200 or "id_token" not in body:
            reason = body.get("error_description") or body.get("error") or f"HTTP {status}"
            raise Unauthorized(
                f"Google rejected the authorization code: {reason}", code="oauth_failed"
            )
        return await self.verify_id_token(str(body["id_token"]))

    async def verify_id_token(self, id_token: str) -> GoogleIdentity:
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized("Malformed Google ID token", code="oauth_failed") from None
        key = await self._signing_key(kid)
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=["RS256"],
                audience=self.client_id,
                leeway=_CLOCK_SKEW,
                options={"require": ["iss", "aud", "exp", "sub", "email"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Invalid Google ID token: {exc}", code="oauth_failed") from None
        if claims["iss"] not in GOOGLE_ISSUERS:
            raise Unauthorized("Invalid Google ID token: wrong issuer", code="oauth_failed")
        if claims.get("email_verified") not in (True, "true"):
            raise Unauthorized("Google account email is not verified", code="oauth_failed")
        return GoogleIdentity(
            sub=str(claims["sub"]),
            email=str(claims["email"]),
            given_name=claims.get("given_name"),
            family_name=claims.get("family_name"),
            picture=claims.get("picture"),
        )

    async def _signing_key(self, kid: str | None) -> Any:
        stale = time.monotonic() - self._jwks_fetched > _JWKS_TTL
        if self._jwks is None or stale or not self._has_kid(kid):
            await self._fetch_jwks()
        assert self._jwks is not None
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthorized("Google ID token signed with an unknown key", code="oauth_failed")

    def _has_kid(self, kid: str | None) -> bool:
        return self._jwks is not None and any(k.key_id == kid for k in self._jwks.keys)

    async def _fetch_jwks(self) -> None:
        try:
            async with self._session.get(self._jwks_url) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            self._jwks = jwt.PyJWKSet.from_dict(data)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            raise GoogleUnavailable(f"Google JWKS unavailable: {type(exc).__name__}") from None
        self._jwks_fetched = time.monotonic()
