"""POST /api/auth/oauth/google against a fake Google speaking the real wire formats."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio

from memoryd.storage.database import Database
from memoryd.storage.users import UserStore
from tests.conftest import StartServer
from tests.fakes.google import FakeGoogle, SigningKey
from tests.helpers import PASSWORD, Api

pytestmark = pytest.mark.storage

CLIENT_ID = "1234567890-memoryd.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-fake-secret"
REDIRECT = "http://localhost:3000/auth/callback"


@pytest_asyncio.fixture(scope="module")
async def google() -> AsyncIterator[FakeGoogle]:
    fake = await FakeGoogle(CLIENT_ID, CLIENT_SECRET).start()
    yield fake
    await fake.stop()


@pytest.fixture(autouse=True)
def _healthy_google(google: FakeGoogle) -> None:
    google.token_failure = None
    google.certs_failure = None


@pytest_asyncio.fixture(scope="module")
async def oauth_api(
    start_server: StartServer, google: FakeGoogle, http: aiohttp.ClientSession
) -> Api:
    running = await start_server(
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_token_url=google.token_url,
        google_jwks_url=google.jwks_url,
    )
    return Api(http, running.url)


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


def user_of(client: Api) -> dict[str, Any]:
    user: dict[str, Any] = client.__dict__["user"]
    return user


def email_of(client: Api) -> str:
    return str(client.__dict__["email"])


async def _sign_in(api: Api, code: str, redirect_uri: str = REDIRECT) -> Any:
    return await api.post(
        "/api/auth/oauth/google", json={"code": code, "redirectUri": redirect_uri}
    )


async def test_a_new_google_user_is_created(oauth_api: Api, google: FakeGoogle) -> None:
    account = google.account(given_name="Ada", family_name="Lovelace")
    resp = await _sign_in(oauth_api, google.code(account))
    assert resp.status == 200, resp.body
    assert set(resp.body) == {"user", "accessToken", "refreshToken", "isNewUser"}
    assert resp.body["isNewUser"] is True
    user = resp.body["user"]
    assert user["email"] == account["email"]
    assert user["firstName"] == "Ada"
    assert user["lastName"] == "Lovelace"
    assert user["avatarUrl"] == account["picture"]
    assert user["isVerified"] is True
    assert user["role"] == "user"
    assert user["lastLoginAt"] is not None

    # The exchange spoke Google's token-endpoint format.
    sent = google.token_requests[-1]
    assert sent["grant_type"] == "authorization_code"
    assert sent["client_id"] == CLIENT_ID
    assert sent["client_secret"] == CLIENT_SECRET
    assert sent["redirect_uri"] == REDIRECT

    me = oauth_api.as_user(resp.body["accessToken"])
    categories = await me.get("/api/categories")
    assert categories.status == 200
    assert len(categories.body["categories"]) == 8
    assert all(c["isDefault"] for c in categories.body["categories"])
    claims = jwt.decode(resp.body["accessToken"], options={"verify_signature": False})
    assert claims["userId"] == user["id"]
    refreshed = await oauth_api.post(
        "/api/auth/refresh", json={"refreshToken": resp.body["refreshToken"]}
    )
    assert refreshed.status == 200


async def test_the_same_google_account_signs_in_again(oauth_api: Api, google: FakeGoogle) -> None:
    account = google.account()
    first = await _sign_in(oauth_api, google.code(account))
    assert first.status == 200, first.body
    # Google may report a changed email for the same account; `sub` is what identifies it.
    second = await _sign_in(oauth_api, google.code({**account, "given_name": "Changed"}))
    assert second.status == 200, second.body
    assert second.body["isNewUser"] is False
    assert second.body["user"]["id"] == first.body["user"]["id"]
    assert second.body["refreshToken"] != first.body["refreshToken"]


async def test_an_existing_password_account_is_linked(oauth_api: Api, google: FakeGoogle) -> None:
    local = await oauth_api.register()
    email: str = email_of(local)
    account = google.account(email.upper())
    resp = await _sign_in(oauth_api, google.code(account))
    assert resp.status == 200, resp.body
    assert resp.body["isNewUser"] is False
    assert resp.body["user"]["id"] == user_of(local)["id"]
    assert resp.body["user"]["isVerified"] is True

    # Linked by `sub` from now on.
    again = await _sign_in(oauth_api, google.code({**account, "email": "moved@example.com"}))
    assert again.body["user"]["id"] == user_of(local)["id"]
    me = await local.get("/api/users/me")
    assert me.body["user"]["isVerified"] is True
    categories = await local.get("/api/categories")
    assert len(categories.body["categories"]) == 8  # linking added no second set


async def test_linking_an_unverified_account_ends_its_password_and_sessions(
    oauth_api: Api, google: FakeGoogle
) -> None:
    """Someone registered the owner's address first: Google proves who owns it."""
    squatter = await oauth_api.register()
    email = email_of(squatter)
    resp = await _sign_in(oauth_api, google.code(google.account(email)))
    assert resp.status == 200, resp.body
    assert resp.body["user"]["id"] == user_of(squatter)["id"]

    login = await oauth_api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 401
    refresh = await oauth_api.post(
        "/api/auth/refresh",
        json={"refreshToken": squatter.refresh_token},  # type: ignore[attr-defined]
    )
    assert refresh.status == 401
    # The owner's own Google session works.
    mine = await oauth_api.post(
        "/api/auth/refresh", json={"refreshToken": resp.body["refreshToken"]}
    )
    assert mine.status == 200


async def test_a_google_only_account_has_no_password(oauth_api: Api, google: FakeGoogle) -> None:
    account = google.account()
    assert (await _sign_in(oauth_api, google.code(account))).status == 200
    for password in ("x", PASSWORD, "None"):
        resp = await oauth_api.post(
            "/api/auth/login", json={"email": account["email"], "password": password}
        )
        assert resp.status == 401
        assert resp.error_code == "invalid_credentials"


async def test_an_unknown_code_is_401(oauth_api: Api) -> None:
    resp = await _sign_in(oauth_api, "4/0A-never-issued")
    assert resp.status == 401
    assert resp.error_code == "oauth_failed"


async def test_a_code_is_single_use(oauth_api: Api, google: FakeGoogle) -> None:
    code = google.code(google.account())
    assert (await _sign_in(oauth_api, code)).status == 200
    replay = await _sign_in(oauth_api, code)
    assert replay.status == 401
    assert replay.error_code == "oauth_failed"


async def test_a_redirect_uri_mismatch_is_401(oauth_api: Api, google: FakeGoogle) -> None:
    code = google.code(google.account())
    resp = await _sign_in(oauth_api, code, redirect_uri="https://evil.example/cb")
    assert resp.status == 401
    assert resp.error_code == "oauth_failed"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"email_verified": False}, id="email-not-verified"),
        pytest.param({"email_verified": None}, id="email-verified-missing"),
        pytest.param({"aud": "someone-else.apps.googleusercontent.com"}, id="wrong-aud"),
        pytest.param({"iss": "https://accounts.evil.example"}, id="wrong-iss"),
        pytest.param(
            {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, id="expired"
        ),
        pytest.param({"email": None}, id="no-email"),
    ],
)
async def test_a_bad_id_token_is_401_and_creates_no_user(
    oauth_api: Api, google: FakeGoogle, db: Database, overrides: dict[str, Any]
) -> None:
    account = google.account()
    resp = await _sign_in(oauth_api, google.code(account, **overrides))
    assert resp.status == 401, resp.body
    assert resp.error_code == "oauth_failed"
    assert "accessToken" not in resp.body
    assert await UserStore(db).get_by_google_sub(account["sub"]) is None
    assert await UserStore(db).get_by_email(account["email"]) is None


async def test_google_clock_running_ahead_is_tolerated(oauth_api: Api, google: FakeGoogle) -> None:
    now = int(time.time())
    code = google.code(google.account(), iat=now + 20, exp=now + 3620)
    resp = await _sign_in(oauth_api, code)
    assert resp.status == 200, resp.body


async def test_an_id_token_issued_in_the_far_future_is_401(
    oauth_api: Api, google: FakeGoogle
) -> None:
    now = int(time.time())
    resp = await _sign_in(oauth_api, google.code(google.account(), iat=now + 3600, exp=now + 7200))
    assert resp.status == 401, resp.body
    assert resp.error_code == "oauth_failed"


async def test_the_short_issuer_form_is_accepted(oauth_api: Api, google: FakeGoogle) -> None:
    resp = await _sign_in(oauth_api, google.code(google.account(), iss="accounts.google.com"))
    assert resp.status == 200, resp.body


@pytest.mark.parametrize("same_kid", [False, True], ids=["unknown-kid", "forged-known-kid"])
async def test_a_token_signed_by_an_unknown_key_is_401(
    oauth_api: Api, google: FakeGoogle, db: Database, same_kid: bool
) -> None:
    kid = google.keys[-1].kid if same_kid else f"stranger-{uuid.uuid4().hex[:6]}"
    account = google.account()
    resp = await _sign_in(oauth_api, google.code(account, key=SigningKey(kid)))
    assert resp.status == 401, resp.body
    assert resp.error_code == "oauth_failed"
    assert await UserStore(db).get_by_google_sub(account["sub"]) is None


async def test_a_rotated_google_key_is_fetched(oauth_api: Api, google: FakeGoogle) -> None:
    assert (await _sign_in(oauth_api, google.code(google.account()))).status == 200
    fetched = google.certs_requests
    new_key = google.rotate_key()
    resp = await _sign_in(oauth_api, google.code(google.account(), key=new_key))
    assert resp.status == 200, resp.body
    assert google.certs_requests == fetched + 1
    # Known keys are served from the cache.
    assert (await _sign_in(oauth_api, google.code(google.account()))).status == 200
    assert google.certs_requests == fetched + 1


async def test_google_token_endpoint_down_is_502(oauth_api: Api, google: FakeGoogle) -> None:
    google.token_failure = 500
    resp = await _sign_in(oauth_api, google.code(google.account()))
    assert resp.status == 502, resp.body
    assert resp.error_code == "oauth_provider_unavailable"


async def test_google_certs_down_is_502(oauth_api: Api, google: FakeGoogle) -> None:
    google.certs_failure = 503
    resp = await _sign_in(oauth_api, google.code(google.account(), key=google.rotate_key()))
    assert resp.status == 502, resp.body
    assert resp.error_code == "oauth_provider_unavailable"


async def test_google_unreachable_is_502(
    start_server: StartServer, google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    unused = FakeGoogle(CLIENT_ID, CLIENT_SECRET)
    await unused.start()
    dead_url = unused.token_url
    await unused.stop()
    running = await start_server(
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_token_url=dead_url,
        google_jwks_url=google.jwks_url,
    )
    resp = await _sign_in(Api(http, running.url), google.code(google.account()))
    assert resp.status == 502, resp.body
    assert resp.error_code == "oauth_provider_unavailable"


async def test_a_wrong_client_secret_is_401(
    start_server: StartServer, google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    running = await start_server(
        google_client_id=CLIENT_ID,
        google_client_secret="wrong-secret",
        google_token_url=google.token_url,
        google_jwks_url=google.jwks_url,
    )
    resp = await _sign_in(Api(http, running.url), google.code(google.account()))
    assert resp.status == 401, resp.body
    assert resp.error_code == "oauth_failed"


async def test_request_validation(oauth_api: Api) -> None:
    resp = await oauth_api.post("/api/auth/oauth/google", json={"code": ""})
    assert resp.status == 400
    fields = {d["field"] for d in resp.body["error"]["details"]}
    assert fields == {"code", "redirectUri"}


async def test_without_a_client_id_google_sign_in_is_501(api: Api) -> None:
    resp = await _sign_in(api, "4/0A-anything")
    assert resp.status == 501, resp.body
    assert resp.error_code == "oauth_not_configured"
