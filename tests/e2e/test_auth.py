"""/api/auth/* and /api/users/me over real HTTP: the seed's validation, JWT and RBAC rules."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from memoryd.config import Settings
from memoryd.storage.database import Database
from tests.conftest import RunningServer
from tests.helpers import PASSWORD, Api, promote

pytestmark = pytest.mark.storage

DEFAULT_CATEGORY_NAMES = {
    "Work",
    "Personal",
    "Family",
    "Learning",
    "Travel",
    "Health",
    "Finance",
    "Creative",
}


@pytest_asyncio.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="module")
async def someone(server: RunningServer, http: aiohttp.ClientSession) -> Api:
    """One user for the read-only assertions."""
    return await Api(http, server.url).register()


def user_of(client: Api) -> dict[str, Any]:
    """The user an `Api.register` client acts as (set there as a plain attribute)."""
    user: dict[str, Any] = client.__dict__["user"]
    return user


def email_of(client: Api) -> str:
    return str(client.__dict__["email"])


def refresh_of(client: Api) -> str:
    return str(client.__dict__["refresh_token"])


def _email() -> str:
    return f"auth-{uuid.uuid4().hex[:12]}@example.com"


def _register_body(**fields: Any) -> dict[str, Any]:
    return {
        "email": _email(),
        "password": PASSWORD,
        "firstName": "Grace",
        "lastName": "Hopper",
        **fields,
    }


def _details(body: Any) -> dict[str | None, str]:
    details = body["error"]["details"]
    assert isinstance(details, list)
    for entry in details:
        assert set(entry) == {"field", "message"}, entry
        assert isinstance(entry["message"], str) and entry["message"]
    return {d["field"]: d["message"] for d in details}


def _claims(token: str | None) -> dict[str, Any]:
    assert token is not None
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _server_private_key(settings: Settings) -> bytes:
    return (settings.data_dir / "keys" / "jwt_rs256.pem").read_bytes()


def _access_payload(user: dict[str, Any], **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    payload = {
        "userId": user["id"],
        "email": user["email"],
        "role": "admin",
        "permissions": ["read:memories", "write:memories", "delete:memories", "manage:users"],
        "sub": user["id"],
        "typ": "access",
        "iss": "memory-app",
        "aud": "memory-app-users",
        "iat": now,
        "exp": now + timedelta(minutes=15),
    }
    payload.update(changes)
    return payload


# -- register ---------------------------------------------------------------------------


async def test_register_returns_user_and_token_pair(api: Api) -> None:
    body = _register_body(username="grace42")
    resp = await api.post("/api/auth/register", json=body)
    assert resp.status == 201, resp.body
    assert set(resp.body) == {"user", "accessToken", "refreshToken"}
    user = resp.body["user"]
    assert user["email"] == body["email"]
    assert user["firstName"] == "Grace"
    assert user["lastName"] == "Hopper"
    assert user["username"] == "grace42"
    assert user["role"] == "user"
    assert user["isActive"] is True
    assert user["isVerified"] is False
    assert user["lastLoginAt"] is None
    uuid.UUID(user["id"])
    lowered = {k.lower() for k in user}
    assert not any("password" in k for k in lowered), user
    assert resp.body["accessToken"] != resp.body["refreshToken"]

    me = await api.get("/api/users/me", token=resp.body["accessToken"])
    assert me.status == 200
    assert me.body["user"]["id"] == user["id"]
    assert "passwordHash" not in me.body["user"]


async def test_register_creates_the_eight_default_categories(someone: Api) -> None:
    resp = await someone.get("/api/categories")
    assert resp.status == 200, resp.body
    categories = resp.body["categories"]
    assert {c["name"] for c in categories} == DEFAULT_CATEGORY_NAMES
    assert len(categories) == 8
    assert all(c["isDefault"] is True for c in categories)
    assert all(c["userId"] == user_of(someone)["id"] for c in categories)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": "missing-dot@example"}, "email"),
        ({"password": "passw0rd!"}, "password"),  # no uppercase
        ({"password": "PASSW0RD!"}, "password"),  # no lowercase
        ({"password": "Password!"}, "password"),  # no digit
        ({"password": "Passw0rdx"}, "password"),  # no special character
        ({"password": "Pa0!abc"}, "password"),  # 7 characters
        ({"firstName": ""}, "firstName"),
        ({"lastName": "x" * 101}, "lastName"),
        ({"username": "bad_name"}, "username"),
        ({"username": "with space"}, "username"),
        ({"username": "ab"}, "username"),
        ({"username": "a" * 31}, "username"),
        ({"isAdmin": True}, "isAdmin"),
        ({"role": "admin"}, "role"),
    ],
)
async def test_register_validation(api: Api, changes: dict[str, Any], field: str) -> None:
    resp = await api.post("/api/auth/register", json=_register_body(**changes))
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert set(_details(resp.body)) == {field}


async def test_register_boundaries_are_accepted(api: Api) -> None:
    resp = await api.post(
        "/api/auth/register",
        json=_register_body(
            password="Aa1@aaaa", firstName="x" * 100, lastName="y", username="a" * 30
        ),
    )
    assert resp.status == 201, resp.body
    assert resp.body["user"]["firstName"] == "x" * 100


async def test_register_reports_every_bad_field_at_once(api: Api) -> None:
    resp = await api.post(
        "/api/auth/register",
        json={"email": "nope", "password": "short", "lastName": "", "extra": 1},
    )
    assert resp.status == 400
    details = _details(resp.body)
    assert set(details) == {"email", "password", "firstName", "lastName", "extra"}
    assert details["firstName"] == "is required"
    assert details["extra"] == "is not allowed"


async def test_register_rejects_a_non_object_body(api: Api) -> None:
    resp = await api.post("/api/auth/register", json=["a", "b"])
    assert resp.status == 400
    assert resp.error_code == "validation_failed"


async def test_register_rejects_malformed_json(api: Api) -> None:
    resp = await api.post(
        "/api/auth/register", data=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert resp.error_code == "invalid_json"


@pytest.mark.parametrize("transform", [str, str.upper])
async def test_duplicate_email_is_409(api: Api, transform: Any) -> None:
    body = _register_body()
    assert (await api.post("/api/auth/register", json=body)).status == 201
    again = await api.post(
        "/api/auth/register", json=_register_body(email=transform(body["email"]))
    )
    assert again.status == 409, again.body
    assert again.error_code == "conflict"
    assert _details(again.body) == {"email": "already registered"}


async def test_duplicate_username_at_registration_is_409(api: Api) -> None:
    name = f"u{uuid.uuid4().hex[:12]}"
    assert (await api.post("/api/auth/register", json=_register_body(username=name))).status == 201
    again = await api.post("/api/auth/register", json=_register_body(username=name.upper()))
    assert again.status == 409
    assert "username" in _details(again.body)


async def test_text_plain_body_is_415(api: Api) -> None:
    for path in ("/api/auth/register", "/api/auth/login", "/api/auth/refresh"):
        resp = await api.post(path, data="email=a", headers={"Content-Type": "text/plain"})
        assert resp.status == 415, (path, resp.body)
        assert resp.error_code == "unsupported_media_type"


# -- login ------------------------------------------------------------------------------


async def test_login_with_json_sets_last_login(api: Api) -> None:
    user = await api.register()
    before = datetime.now(UTC) - timedelta(seconds=5)
    resp = await api.post(
        "/api/auth/login", json={"email": email_of(user), "password": PASSWORD, "rememberMe": True}
    )
    assert resp.status == 200, resp.body
    assert set(resp.body) == {"user", "accessToken", "refreshToken"}
    assert resp.body["user"]["id"] == user_of(user)["id"]
    last = datetime.fromisoformat(resp.body["user"]["lastLoginAt"])
    assert before <= last <= datetime.now(UTC) + timedelta(seconds=5)
    me = await api.get("/api/users/me", token=resp.body["accessToken"])
    assert datetime.fromisoformat(me.body["user"]["lastLoginAt"]) == last


async def test_login_with_a_form_body_and_any_email_case(api: Api) -> None:
    user = await api.register()
    resp = await api.post(
        "/api/auth/login",
        data={"email": email_of(user).upper(), "password": PASSWORD, "rememberMe": "on"},
    )
    assert resp.status == 200, resp.body
    assert resp.body["user"]["id"] == user_of(user)["id"]
    assert resp.body["user"]["lastLoginAt"] is not None


async def test_unknown_email_and_wrong_password_look_the_same(api: Api, someone: Api) -> None:
    unknown = await api.post("/api/auth/login", json={"email": _email(), "password": PASSWORD})
    wrong = await api.post(
        "/api/auth/login", json={"email": email_of(someone), "password": PASSWORD + "x"}
    )
    assert unknown.status == wrong.status == 401
    assert unknown.body == wrong.body
    assert unknown.error_code == "invalid_credentials"


async def test_login_validation(api: Api) -> None:
    resp = await api.post("/api/auth/login", json={"email": "", "password": PASSWORD, "x": 1})
    assert resp.status == 400
    assert set(_details(resp.body)) == {"email", "x"}


# -- refresh and logout -----------------------------------------------------------------


async def test_refresh_rotates_and_a_replay_burns_the_family(api: Api) -> None:
    user = await api.register()
    first = refresh_of(user)
    resp = await api.post("/api/auth/refresh", json={"refreshToken": first})
    assert resp.status == 200, resp.body
    assert set(resp.body) == {"user", "accessToken", "refreshToken"}
    second = resp.body["refreshToken"]
    assert second != first
    assert resp.body["user"]["id"] == user_of(user)["id"]
    assert (await api.get("/api/users/me", token=resp.body["accessToken"])).status == 200

    replay = await api.post("/api/auth/refresh", json={"refreshToken": first})
    assert replay.status == 401
    assert replay.error_code == "token_reused"
    # The thief may hold the newest token: it is revoked too.
    newest = await api.post("/api/auth/refresh", json={"refreshToken": second})
    assert newest.status == 401, newest.body
    assert newest.error_code == "invalid_token"


async def test_a_replay_does_not_touch_other_logins(api: Api) -> None:
    user = await api.register()
    other = await api.post("/api/auth/login", json={"email": email_of(user), "password": PASSWORD})
    first = refresh_of(user)
    assert (await api.post("/api/auth/refresh", json={"refreshToken": first})).status == 200
    assert (await api.post("/api/auth/refresh", json={"refreshToken": first})).status == 401
    still = await api.post("/api/auth/refresh", json={"refreshToken": other.body["refreshToken"]})
    assert still.status == 200, still.body


async def test_an_access_token_is_not_a_refresh_token(api: Api, someone: Api) -> None:
    resp = await api.post("/api/auth/refresh", json={"refreshToken": someone.token})
    assert resp.status == 401
    assert resp.error_code == "invalid_token"
    # ... and the other way round.
    me = await api.get("/api/users/me", token=refresh_of(someone))
    assert me.status == 401
    assert me.error_code == "invalid_token"


async def test_refresh_with_garbage_is_401(api: Api) -> None:
    resp = await api.post("/api/auth/refresh", json={"refreshToken": "not.a.jwt"})
    assert resp.status == 401
    assert resp.error_code == "invalid_token"
    missing = await api.post("/api/auth/refresh", json={})
    assert missing.status == 400
    assert set(_details(missing.body)) == {"refreshToken"}


async def test_refresh_picks_up_a_new_role(api: Api, db: Database) -> None:
    user = await api.register()
    await promote(user, db, "premium")
    resp = await api.post("/api/auth/refresh", json={"refreshToken": refresh_of(user)})
    assert resp.status == 200
    assert resp.body["user"]["role"] == "premium"
    assert "delete:memories" in _claims(resp.body["accessToken"])["permissions"]


async def test_logout_revokes_the_refresh_token(api: Api) -> None:
    user = await api.register()
    token = refresh_of(user)
    resp = await user.post("/api/auth/logout", json={"refreshToken": token})
    assert resp.status == 204
    assert resp.body is None
    again = await api.post("/api/auth/refresh", json={"refreshToken": token})
    assert again.status == 401
    # A logged-out token is merely revoked, not evidence of theft.
    assert again.error_code == "invalid_token"


async def test_logout_all_devices_revokes_every_login(api: Api) -> None:
    user = await api.register()
    other = await api.post("/api/auth/login", json={"email": email_of(user), "password": PASSWORD})
    assert (await user.post("/api/auth/logout", json={"allDevices": True})).status == 204
    for token in (refresh_of(user), other.body["refreshToken"]):
        assert (await api.post("/api/auth/refresh", json={"refreshToken": token})).status == 401


async def test_logout_cannot_revoke_someone_elses_token(api: Api) -> None:
    victim = await api.register()
    attacker = await api.register()
    resp = await attacker.post("/api/auth/logout", json={"refreshToken": refresh_of(victim)})
    assert resp.status == 204
    still = await api.post("/api/auth/refresh", json={"refreshToken": refresh_of(victim)})
    assert still.status == 200, still.body


async def test_logout_needs_authentication(api: Api, someone: Api) -> None:
    resp = await api.post("/api/auth/logout", json={"refreshToken": refresh_of(someone)})
    assert resp.status == 401
    assert resp.error_code == "unauthorized"


# -- /api/users/me ----------------------------------------------------------------------


async def test_me_requires_a_bearer_token(api: Api, someone: Api) -> None:
    assert (await api.get("/api/users/me")).error_code == "unauthorized"
    basic = await api.get("/api/users/me", headers={"Authorization": f"Basic {someone.token}"})
    assert basic.status == 401
    empty = await api.get("/api/users/me", headers={"Authorization": "Bearer "})
    assert empty.status == 401


async def test_patch_me_updates_profile_fields(api: Api) -> None:
    user = await api.register()
    name = f"p{uuid.uuid4().hex[:10]}"
    changes = {
        "username": name,
        "firstName": "Ada",
        "lastName": "King",
        "avatarUrl": "https://example.com/a.png",
        "phoneNumber": "+44 20 7946 0958",
        "timezone": "Europe/London",
        "language": "en-GB",
        "themePreference": "dark",
    }
    resp = await user.patch("/api/users/me", json=changes)
    assert resp.status == 200, resp.body
    for key, value in changes.items():
        assert resp.body["user"][key] == value, key
    me = await user.get("/api/users/me")
    for key, value in changes.items():
        assert me.body["user"][key] == value, key
    assert me.body["user"]["email"] == email_of(user)

    cleared = await user.patch("/api/users/me", json={"avatarUrl": None, "phoneNumber": None})
    assert cleared.status == 200
    assert cleared.body["user"]["avatarUrl"] is None
    assert cleared.body["user"]["phoneNumber"] is None
    assert cleared.body["user"]["username"] == name


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"username": "no!"}, "username"),
        ({"firstName": ""}, "firstName"),
        ({"lastName": "z" * 101}, "lastName"),
        ({"themePreference": "blue"}, "themePreference"),
        ({"phoneNumber": "call me"}, "phoneNumber"),
        ({"timezone": None}, "timezone"),
        ({"email": "new@example.com"}, "email"),
        ({"role": "admin"}, "role"),
    ],
)
async def test_patch_me_validation(someone: Api, changes: dict[str, Any], field: str) -> None:
    resp = await someone.patch("/api/users/me", json=changes)
    assert resp.status == 400, resp.body
    assert resp.error_code == "validation_failed"
    assert set(_details(resp.body)) == {field}
    me = await someone.get("/api/users/me")
    assert me.body["user"]["role"] == "user"


async def test_patch_me_username_conflict_is_409(api: Api) -> None:
    first = await api.register(username=f"c{uuid.uuid4().hex[:10]}")
    second = await api.register()
    taken = user_of(first)["username"]
    resp = await second.patch("/api/users/me", json={"username": taken.upper()})
    assert resp.status == 409, resp.body
    assert _details(resp.body) == {"username": "taken"}
    # Keeping one's own username is not a conflict.
    same = await first.patch("/api/users/me", json={"username": taken})
    assert same.status == 200


# -- JWT --------------------------------------------------------------------------------


async def test_access_token_claims(someone: Api) -> None:
    token = someone.token
    assert token is not None
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    claims = _claims(token)
    user = user_of(someone)
    assert claims["iss"] == "memory-app"
    assert claims["aud"] == "memory-app-users"
    assert claims["userId"] == user["id"]
    assert claims["email"] == user["email"]
    assert claims["role"] == "user"
    assert claims["permissions"] == ["read:memories", "write:memories"]
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60


async def test_refresh_token_lives_seven_days(someone: Api) -> None:
    claims = _claims(refresh_of(someone))
    assert jwt.get_unverified_header(refresh_of(someone))["alg"] == "RS256"
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600
    assert "permissions" not in claims


async def test_a_token_signed_by_another_key_is_rejected(api: Api, someone: Api) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_access_payload(user_of(someone)), other, algorithm="RS256")
    resp = await api.get("/api/users/me", token=forged)
    assert resp.status == 401
    assert resp.error_code == "invalid_token"


async def test_an_expired_token_is_rejected(
    api: Api, someone: Api, base_settings: Settings
) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    expired = jwt.encode(
        _access_payload(user_of(someone), iat=past, exp=past + timedelta(minutes=15)),
        _server_private_key(base_settings),
        algorithm="RS256",
    )
    resp = await api.get("/api/users/me", token=expired)
    assert resp.status == 401
    assert resp.error_code == "token_expired"


@pytest.mark.parametrize(
    "changes", [{"iss": "someone-else"}, {"aud": "another-app"}, {"typ": "refresh"}]
)
async def test_a_token_with_foreign_claims_is_rejected(
    api: Api, someone: Api, base_settings: Settings, changes: dict[str, Any]
) -> None:
    token = jwt.encode(
        _access_payload(user_of(someone), **changes),
        _server_private_key(base_settings),
        algorithm="RS256",
    )
    resp = await api.get("/api/users/me", token=token)
    assert resp.status == 401
    assert resp.error_code == "invalid_token"


async def test_the_server_key_signs_what_the_server_accepts(
    api: Api, someone: Api, base_settings: Settings
) -> None:
    """Control for the forgery tests: the same payload with the real key is accepted."""
    token = jwt.encode(
        _access_payload(user_of(someone), role="user", permissions=["read:memories"]),
        _server_private_key(base_settings),
        algorithm="RS256",
    )
    resp = await api.get("/api/users/me", token=token)
    assert resp.status == 200, resp.body


async def test_a_token_from_a_node_whose_clock_runs_ahead_is_accepted(
    api: Api, someone: Api, base_settings: Settings
) -> None:
    key = _server_private_key(base_settings)
    ahead = datetime.now(UTC) + timedelta(seconds=5)
    token = jwt.encode(
        _access_payload(user_of(someone), iat=ahead, exp=ahead + timedelta(minutes=15)),
        key,
        algorithm="RS256",
    )
    assert (await api.get("/api/users/me", token=token)).status == 200
    # ... within reason: a token issued an hour from now is not.
    future = datetime.now(UTC) + timedelta(hours=1)
    token = jwt.encode(
        _access_payload(user_of(someone), iat=future, exp=future + timedelta(minutes=15)),
        key,
        algorithm="RS256",
    )
    resp = await api.get("/api/users/me", token=token)
    assert resp.status == 401
    assert resp.error_code == "invalid_token"


async def test_a_tampered_token_is_rejected(api: Api, someone: Api) -> None:
    token = someone.token
    assert token is not None
    header, payload, signature = token.split(".")
    claims = _claims(token)
    claims["role"] = "admin"
    claims["permissions"] = ["delete:memories", "manage:users"]
    forged_payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    resp = await api.get("/api/users/me", token=f"{header}.{forged_payload}.{signature}")
    assert resp.status == 401
    assert resp.error_code == "invalid_token"
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    resp = await api.get("/api/users/me", token=f"{header}.{payload}.{flipped}")
    assert resp.status == 401


async def test_unsigned_and_hmac_tokens_are_rejected(
    api: Api, someone: Api, base_settings: Settings
) -> None:
    payload = _access_payload(user_of(someone))
    unsigned = jwt.encode(payload, "", algorithm="none")
    assert (await api.get("/api/users/me", token=unsigned)).error_code == "invalid_token"
    hmac = jwt.encode(payload, "x" * 64, algorithm="HS256")
    assert (await api.get("/api/users/me", token=hmac)).error_code == "invalid_token"


# -- RBAC -------------------------------------------------------------------------------


async def test_delete_memory_needs_the_premium_role(api: Api, db: Database) -> None:
    user = await api.register()
    created = await user.post("/api/memories", json={"title": "keep or not"})
    assert created.status == 201, created.body
    memory_id = created.body["memory"]["id"]

    denied = await user.delete(f"/api/memories/{memory_id}")
    assert denied.status == 403, denied.body
    assert denied.error_code == "forbidden"
    assert "delete:memories" in denied.body["error"]["message"]
    assert denied.body["error"]["details"] == {"permission": "delete:memories"}
    assert (await user.get(f"/api/memories/{memory_id}")).status == 200

    premium = await promote(user, db, "premium")
    claims = _claims(premium.token)
    assert claims["role"] == "premium"
    assert claims["permissions"] == [
        "read:memories",
        "write:memories",
        "delete:memories",
        "access:ai",
        "sync:whatsapp",
    ]
    deleted = await premium.delete(f"/api/memories/{memory_id}")
    assert deleted.status == 204, deleted.body
    assert (await premium.get(f"/api/memories/{memory_id}")).status == 404


async def test_admin_token_carries_every_permission(api: Api, db: Database) -> None:
    admin = await promote(await api.register(), db, "admin")
    claims = _claims(admin.token)
    assert claims["role"] == "admin"
    assert set(claims["permissions"]) == {
        "read:memories",
        "write:memories",
        "delete:memories",
        "manage:users",
        "access:ai",
        "sync:whatsapp",
    }
