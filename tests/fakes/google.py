"""A fake Google OAuth 2.0 / OpenID Connect server on a random local port.

It speaks the wire formats of Google's real endpoints:

- ``POST /token`` (``https://oauth2.googleapis.com/token``): a form-encoded
  ``authorization_code`` grant; answers ``{access_token, expires_in, token_type, scope,
  id_token}``, or Google's OAuth error bodies (``invalid_grant``, ``invalid_client``,
  ``redirect_uri_mismatch``, ``unsupported_grant_type``).
- ``GET /oauth2/v3/certs`` (``https://www.googleapis.com/oauth2/v3/certs``): the JWKS.

A test registers an authorization code together with the ID-token claims it should yield
(`FakeGoogle.code`), so it can make codes whose ID token is unverified, expired, meant for
another client, from another issuer, or signed by a key the JWKS does not publish. Codes are
single-use, as Google's are.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes import base_url, serve_on_loopback

ISSUER = "https://accounts.google.com"
SCOPE = (
    "openid https://www.googleapis.com/auth/userinfo.email "
    "https://www.googleapis.com/auth/userinfo.profile"
)


def _b64uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": _b64uint(numbers.n),
            "e": _b64uint(numbers.e),
        }


@dataclass
class _Grant:
    claims: dict[str, Any]
    redirect_uri: str
    key: SigningKey


class FakeGoogle:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.keys = [SigningKey(f"fake-{uuid.uuid4().hex[:8]}")]
        self.token_failure: int | None = None  # answer /token with this 5xx status
        self.certs_failure: int | None = None  # answer /certs with this 5xx status
        self.token_requests: list[dict[str, str]] = []
        self.certs_requests = 0
        self._grants: dict[str, _Grant] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- test-side API ----------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/oauth2/v3/certs"

    def account(
        self,
        email: str | None = None,
        *,
        sub: str | None = None,
        given_name: str = "Ada",
        family_name: str = "Lovelace",
    ) -> dict[str, Any]:
        """The profile claims of a Google account (``sub`` is Google's stable user id)."""
        return {
            "sub": sub or str(secrets.randbelow(10**21)),
            "email": email or f"g-{uuid.uuid4().hex[:12]}@gmail.com",
            "email_verified": True,
            "given_name": given_name,
            "family_name": family_name,
            "name": f"{given_name} {family_name}",
            "picture": f"https://lh3.googleusercontent.com/a/{uuid.uuid4().hex}=s96-c",
        }

    def code(
        self,
        account: dict[str, Any],
        *,
        redirect_uri: str = "http://localhost:3000/auth/callback",
        key: SigningKey | None = None,
        **overrides: Any,
    ) -> str:
        """Register a one-time authorization code whose ID token carries ``account``.

        ``overrides`` replace standard claims (``aud``, ``iss``, ``exp``, ``iat``,
        ``email_verified``...); a value of ``None`` removes the claim. ``key`` signs the
        token instead of the current published key.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "azp": self.client_id,
            "aud": self.client_id,
            "at_hash": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 3600,
            **account,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        code = f"4/0A{secrets.token_urlsafe(32)}"
        self._grants[code] = _Grant(claims, redirect_uri, key or self.keys[-1])
        return code

    def rotate_key(self) -> SigningKey:
        """Publish a new signing key (the old one stays published, as Google does)."""
        key = SigningKey(f"fake-{uuid.uuid4().hex[:8]}")
        self.keys.append(key)
        return key

    # -- server -----------------------------------------------------------------------

    async def start(self) -> FakeGoogle:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_get("/oauth2/v3/certs", self._certs)
        self._runner = await serve_on_loopback(app)
        self.url = base_url(self._runner)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def _token(self, request: web.Request) -> web.Response:
        if self.token_failure is not None:
            return web.Response(
                status=self.token_failure,
                text="<html><body>Server Error</body></html>",
                content_type="text/html",
            )
        if request.content_type != "application/x-www-form-urlencoded":
            return self._oauth_error(400, "invalid_request", "Bad Request")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        if form.get("grant_type") != "authorization_code":
            return self._oauth_error(
                400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        if form.get("client_id") != self.client_id:
            return self._oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if form.get("client_secret") != self.client_secret:
            return self._oauth_error(401, "invalid_client", "Unauthorized")
        grant = self._grants.pop(form.get("code", ""), None)
        if grant is None:
            return self._oauth_error(400, "invalid_grant", "Bad Request")
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        id_token = jwt.encode(
            grant.claims,
            grant.key.private,
            algorithm="RS256",
            headers={"kid": grant.key.kid, "typ": "JWT"},
        )
        return web.json_response(
            {
                "access_token": f"ya29.{secrets.token_urlsafe(48)}",
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": SCOPE,
                "id_token": id_token,
            },
            headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"},
        )

    async def _certs(self, request: web.Request) -> web.Response:
        self.certs_requests += 1
        if self.certs_failure is not None:
            return web.Response(status=self.certs_failure, text="Service Unavailable")
        return web.json_response(
            {"keys": [k.jwk() for k in self.keys]},
            headers={"Cache-Control": "public, max-age=19800, must-revalidate, no-transform"},
        )
