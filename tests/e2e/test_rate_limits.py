"""Rate limits: per IP on /api/auth/*, per user on the API; 429 with standard headers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from memoryd.config import RateLimit
from memoryd.server.ratelimit import Decision, RateLimiter
from tests.conftest import StartServer
from tests.helpers import PASSWORD, Api, Response

pytestmark = pytest.mark.storage


def _assert_limited(resp: Response, limit: int) -> None:
    assert resp.status == 429, resp.body
    assert resp.error_code == "rate_limited"
    assert resp.body["error"]["message"]
    retry_after = int(resp.header("Retry-After") or "0")
    assert 1 <= retry_after <= 60
    assert resp.header("RateLimit-Limit") == str(limit)
    assert resp.header("RateLimit-Remaining") == "0"
    assert 0 <= int(resp.header("RateLimit-Reset") or "-1") <= 60
    assert resp.body["error"]["details"]["retryAfter"] == retry_after


def _remaining(resp: Response) -> int:
    return int(resp.header("RateLimit-Remaining") or "-1")


async def test_auth_is_limited_per_ip(
    start_server: StartServer, http: aiohttp.ClientSession, api: Api
) -> None:
    limited = await start_server(rate_limit_auth=RateLimit(3, 60))
    anon = Api(http, limited.url)
    user = await anon.register()  # 1
    first = user.email  # type: ignore[attr-defined]
    login = await anon.post("/api/auth/login", json={"email": first, "password": PASSWORD})  # 2
    assert login.status == 200
    assert login.header("RateLimit-Limit") == "3"
    assert _remaining(login) == 1
    invalid = await anon.post("/api/auth/register", json={"email": "bad"})  # 3: counts too
    assert invalid.status == 400
    assert _remaining(invalid) == 0

    fourth = await anon.post(
        "/api/auth/register",
        json={
            "email": "never-created@example.com",
            "password": PASSWORD,
            "firstName": "A",
            "lastName": "B",
        },
    )
    _assert_limited(fourth, 3)
    _assert_limited(
        await anon.post("/api/auth/login", json={"email": first, "password": PASSWORD}), 3
    )
    # Refreshing proves possession of a signed token, not a password guess: it counts
    # against the API limit, so devices sharing an IP are not locked out by logins.
    refresh = await anon.post("/api/auth/refresh", json={"refreshToken": "x"})
    assert refresh.status == 401, refresh.body
    # The refused registration did not happen.
    again = await api.post(
        "/api/auth/login", json={"email": "never-created@example.com", "password": PASSWORD}
    )
    assert again.status == 401

    # The per-IP auth limit does not touch the API of a signed-in user.
    assert (await Api(http, limited.url, user.token).get("/api/memories")).status == 200


async def test_api_is_limited_per_user(
    start_server: StartServer, http: aiohttp.ClientSession, api: Api
) -> None:
    limited = await start_server(rate_limit_api=RateLimit(5, 60))
    alice = Api(http, limited.url, (await api.register()).token)
    bob = Api(http, limited.url, (await api.register()).token)

    remaining = []
    for path in ("/api/memories", "/api/categories", "/api/memories", "/api/categories"):
        resp = await alice.get(path)
        assert resp.status == 200, resp.body
        assert resp.header("RateLimit-Limit") == "5"
        remaining.append(_remaining(resp))
    created = await alice.post("/api/memories", json={"title": "fifth"})
    assert created.status == 201
    remaining.append(_remaining(created))
    assert remaining == [4, 3, 2, 1, 0]

    _assert_limited(await alice.get("/api/memories"), 5)
    _assert_limited(await alice.post("/api/memories", json={"title": "sixth"}), 5)

    served = await bob.get("/api/memories")
    assert served.status == 200
    assert _remaining(served) == 4
    # Anonymous and bad-token requests are refused before any user's limit is counted.
    assert (await Api(http, limited.url).get("/api/memories")).status == 401
    assert (await Api(http, limited.url, "garbage").get("/api/memories")).status == 401
    assert _remaining(await bob.get("/api/memories")) == 3

    # The refused create stored nothing.
    listing = await Api(http, api.url, alice.token).get("/api/memories")
    assert [m["title"] for m in listing.body["memories"]] == ["fifth"]


async def test_health_and_metrics_are_not_limited(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    limited = await start_server(rate_limit_api=RateLimit(1, 60), rate_limit_auth=RateLimit(1, 60))
    anon = Api(http, limited.url)
    for _ in range(3):
        assert (await anon.get("/health")).status == 200
        assert (await anon.get("/ready")).status == 200
        assert (await anon.get("/metrics")).status == 200


async def test_the_window_resets(
    start_server: StartServer, http: aiohttp.ClientSession, api: Api
) -> None:
    limited = await start_server(rate_limit_api=RateLimit(2, 1))
    user = Api(http, limited.url, (await api.register()).token)
    assert (await user.get("/api/memories")).status == 200
    assert (await user.get("/api/memories")).status == 200
    refused = await user.get("/api/memories")
    assert refused.status == 429
    assert refused.header("Retry-After") == "1"
    await asyncio.sleep(1.1)
    served = await user.get("/api/memories")
    assert served.status == 200
    assert _remaining(served) == 1


# -- the limiter itself -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_per_key_within_a_fixed_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(3, 10), clock=clock)
    assert limiter.hit("a") == Decision(True, 3, 2, 10.0)
    clock.now += 4
    assert limiter.hit("a") == Decision(True, 3, 1, 6.0)
    assert limiter.hit("b") == Decision(True, 3, 2, 10.0)  # its own window
    assert limiter.hit("a") == Decision(True, 3, 0, 6.0)
    clock.now += 5
    refused = limiter.hit("a")
    assert refused == Decision(False, 3, 0, 1.0)
    assert refused is not None
    assert refused.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
        "Retry-After": "1",
    }
    # Refused hits do not extend the window.
    assert limiter.hit("a") == Decision(False, 3, 0, 1.0)
    clock.now += 1  # exactly at the end of the window: a new one starts
    assert limiter.hit("a") == Decision(True, 3, 2, 10.0)
    assert limiter.hit("b") == Decision(True, 3, 1, 10.0 - 6)


def test_decision_headers_round_up_and_retry_after_is_at_least_one() -> None:
    allowed = Decision(True, 5, 4, 12.2)
    assert allowed.headers() == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "13",
    }
    assert Decision(False, 5, 0, 0.01).headers()["Retry-After"] == "1"
    assert Decision(False, 5, 0, 59.5).headers()["Retry-After"] == "60"
    # The error body's retryAfter is the header's value: never a second too early.
    assert Decision(False, 5, 0, 59.2).retry_after == 60
    assert Decision(False, 5, 0, 59.2).headers()["Retry-After"] == "60"


def test_a_limit_of_zero_is_off() -> None:
    limiter = RateLimiter(RateLimit(0, 60), clock=FakeClock())
    assert all(limiter.hit("a") is None for _ in range(1000))


def test_stale_windows_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    from memoryd.server import ratelimit

    monkeypatch.setattr(ratelimit, "_PRUNE_EVERY", 5)
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(1, 10), clock=clock)
    for i in range(5):
        limiter.hit(f"old-{i}")
    clock.now += 10
    limiter.hit("new-0")  # the 6th key: the five old windows are over and go
    assert set(limiter._windows) == {"new-0"}
    assert limiter.hit("old-0") == Decision(True, 1, 0, 10.0)
    assert limiter.hit("new-0") == Decision(False, 1, 0, 10.0)


async def test_behind_a_proxy_the_ip_is_the_one_the_proxy_added(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    """A proxy that appends to X-Forwarded-For keeps what the client sent on the left:
    only the last entry counts, so a forged one buys no fresh limit."""
    proxied = await start_server(rate_limit_auth=RateLimit(2, 60), trust_proxy=True)
    anon = Api(http, proxied.url)
    body = {"email": "nobody@example.com", "password": PASSWORD}

    async def login(forwarded: str) -> Response:
        return await anon.post("/api/auth/login", json=body, headers={"X-Forwarded-For": forwarded})

    for forged in ("1.1.1.1", "2.2.2.2"):
        assert (await login(f"{forged}, 198.51.100.7")).status == 401
    _assert_limited(await login("3.3.3.3, 198.51.100.7"), 2)
    assert (await login("3.3.3.3, 198.51.100.8")).status == 401  # another client
