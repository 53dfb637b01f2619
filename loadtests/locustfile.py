"""Load test of memoryd with locust: REST users and WebSocket device sessions.

* `RestUser`: the seed plan's k6 flow (login, create a memory, list memories) plus reading
  and posting messages, with think times of a person (2-6 s between actions).
* `SocketUser`: one account's device session over protocol v1 (``--ws-codec json`` or
  ``msgpack``) sending messages, typing signals and history requests, plus a second,
  listening device of the same account. Every reply and every fan-out delivery is a locust
  request event: the name is the frame type (``message.send``, ``typing``,
  ``message.history``; ``deliver message.created`` and ``deliver typing`` for what reached
  the other device) and the response time is send -> reply, or send -> delivered on the
  other device, so locust's statistics, charts and CSV cover the real-time path too.
  The client is ``websockets.sync.client`` (plain blocking sockets, which locust's gevent
  patches), never asyncio inside gevent.

Accounts are registered up front, in parallel, when the test starts (``--accounts``,
default 200); locust users take them in turn and keep their tokens fresh with
``/api/auth/refresh`` (and ``auth.refresh`` on open sockets), as an app would.

The server must run with the REST rate limits off (or raised) for load testing only:
every simulated user comes from 127.0.0.1, which the default 5 logins per 15 minutes per
IP would stop at once::

    MEMORYD_RATE_LIMIT_AUTH=off MEMORYD_RATE_LIMIT_API=off memoryd serve --port 8080
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080

The seed profile (ramp to 100 then 200 users, pass/fail on the seed's thresholds) adds
``loadtests/seed_shape.py``; ``python -m loadtests.bench seed`` starts a server and runs
it headless in one command (docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import msgspec
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from gevent.pool import Pool
from locust import HttpUser, User, between, events, task
from locust.env import Environment
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

PASSWORD = "Passw0rd!"
REFRESH_MARGIN = 120.0  # refresh an access token this long before it expires
REQUEST_TIMEOUT = 10.0
SUBPROTOCOL = {"json": "memoryd.v1.json", "msgpack": "memoryd.v1.msgpack"}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("memoryd")
    group.add_argument(
        "--accounts", type=int, default=200, help="accounts registered up front (default 200)"
    )
    group.add_argument(
        "--register-parallel", type=int, default=4, help="registrations in flight (default 4)"
    )
    group.add_argument(
        "--ws-codec", choices=["json", "msgpack"], default="json", help="socket codec"
    )


# -- accounts -------------------------------------------------------------------------------


def _expiry(token: str) -> float:
    """The ``exp`` of a JWT (not verified: the server does that)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])


class Account:
    """One registered user; locust users that share it share its tokens."""

    def __init__(self, email: str, body: dict[str, Any]) -> None:
        self.email = email
        self.user_id: str = body["user"]["id"]
        self._lock = Semaphore()
        self._set(body)

    def _set(self, body: dict[str, Any]) -> None:
        self.token: str = body["accessToken"]
        self.refresh_token: str = body["refreshToken"]
        self.expires_at = _expiry(self.token)

    def fresh_token(self, refresh: Callable[[str], dict[str, Any] | None]) -> str:
        """The access token, renewed with ``refresh(refresh_token)`` first when it is about
        to expire (once, under a lock: users sharing the account must not replay one
        refresh token, which would revoke its family)."""
        if self.expires_at - time.time() > REFRESH_MARGIN:
            return self.token
        with self._lock:
            if self.expires_at - time.time() <= REFRESH_MARGIN:
                body = refresh(self.refresh_token)
                if body is not None:
                    self._set(body)
        return self.token


ACCOUNTS: list[Account] = []
_turn = itertools.count()


def next_account() -> Account:
    if not ACCOUNTS:
        raise RuntimeError("no accounts were registered (see the test_start log)")
    return ACCOUNTS[next(_turn) % len(ACCOUNTS)]


_registration = Semaphore()


@events.init.add_listener
def _register_at_start_up(environment: Environment, **_kw: Any) -> None:
    """Headless runs register before the test (and a load shape's clock) starts: with a
    shape, locust re-fires ``test_start`` on every tick until the first spawn, and time
    spent registering would come off the first stage."""
    options = environment.parsed_options
    if environment.host and options is not None and options.headless:
        _register(environment)


@events.test_start.add_listener
def _register(environment: Environment, **_kw: Any) -> None:
    """Register ``--accounts`` users before any simulated user starts, once."""
    import requests  # locust's own dependency; gevent-patched

    with _registration:
        if ACCOUNTS:
            return
        _register_accounts(environment, requests.Session())


def _register_accounts(environment: Environment, session: Any) -> None:
    options = environment.parsed_options
    wanted = options.accounts if options else 20
    parallel = options.register_parallel if options else 4
    host = (environment.host or "http://127.0.0.1:8080").rstrip("/")
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()

    def register(i: int) -> None:
        email = f"load-{run}-{i}@example.com"
        body = {"email": email, "password": PASSWORD, "firstName": "Load", "lastName": f"U{i}"}
        resp = session.post(f"{host}/api/auth/register", json=body, timeout=60)
        if resp.status_code != 201:
            raise RuntimeError(f"register {email}: {resp.status_code} {resp.text[:200]}")
        ACCOUNTS.append(Account(email, resp.json()))

    Pool(parallel).map(register, range(wanted))
    print(f"memoryd: registered {len(ACCOUNTS)} accounts in {time.monotonic() - started:.1f} s")


# -- REST -----------------------------------------------------------------------------------


class RestUser(HttpUser):
    """The app's REST traffic: browse memories, read and post messages, sometimes log in."""

    wait_time = between(2, 6)
    weight = 1

    def on_start(self) -> None:
        self.account = next_account()
        self.memories: list[str] = []
        self.create_memory()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.account.fresh_token(self._refresh)}"}

    def _refresh(self, refresh_token: str) -> dict[str, Any] | None:
        with self.client.post(
            "/api/auth/refresh",
            json={"refreshToken": refresh_token},
            name="/api/auth/refresh",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200:
                return resp.json()  # type: ignore[no-any-return]
            resp.failure(f"refresh: {resp.status_code}")
            return None

    @task(1)
    def seed_flow(self) -> None:
        """The seed's k6 iteration: login, create a memory, list memories."""
        with self.client.post(
            "/api/auth/login",
            json={"email": self.account.email, "password": PASSWORD},
            name="/api/auth/login",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"login: {resp.status_code}")
                return
            token = resp.json()["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}
        self.create_memory(headers)
        self.client.get("/api/memories", headers=headers, name="/api/memories")

    def create_memory(self, headers: dict[str, str] | None = None) -> None:
        body = {"title": "Load Test Memory", "content": {"text": "Load test content"}}
        with self.client.post(
            "/api/memories",
            json=body,
            headers=headers or self._auth(),
            name="/api/memories [create]",
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"create memory: {resp.status_code}")
                return
            self.memories.append(resp.json()["memory"]["id"])
            del self.memories[:-20]

    @task(4)
    def list_memories(self) -> None:
        self.client.get("/api/memories?limit=20", headers=self._auth(), name="/api/memories")

    @task(1)
    def new_memory(self) -> None:
        self.create_memory()

    @task(4)
    def read_messages(self) -> None:
        memory = random.choice(self.memories)
        self.client.get(
            f"/api/memories/{memory}/messages?limit=50",
            headers=self._auth(),
            name="/api/memories/{id}/messages",
        )

    @task(3)
    def post_message(self) -> None:
        memory = random.choice(self.memories)
        self.client.post(
            f"/api/memories/{memory}/messages",
            json={"content": "A short note about this memory.", "clientMsgId": uuid.uuid4().hex},
            headers=self._auth(),
            name="/api/memories/{id}/messages [post]",
        )


# -- WebSocket ------------------------------------------------------------------------------

# clientMsgId -> (send time, sending device): a delivery is timed on the other devices
_SENT_MESSAGES: dict[str, tuple[float, int]] = {}
# sending device -> time of its latest typing (a user types at most every ~second, far
# slower than a delivery takes, so the latest one is the one that arrives)
_SENT_TYPING: dict[str, float] = {}


class Device:
    """One socket: a reader greenlet routes replies to waiting requests and reports
    deliveries; ``request`` sends and waits for the reply."""

    def __init__(self, user: SocketUser, name: str, codec: str) -> None:
        self.user = user
        self.name = name
        self.codec = codec
        self.encode = msgspec.json.encode if codec == "json" else msgspec.msgpack.encode
        self.decode = msgspec.json.decode if codec == "json" else msgspec.msgpack.decode
        self.ws: ClientConnection | None = None
        self.device_id = ""
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[AsyncResult, float]] = {}
        self.last_seq = 0
        self.acked = 0
        self.reader: gevent.Greenlet | None = None
        self._stack = contextlib.ExitStack()

    def open(self, base: str, token: str) -> None:
        t0 = time.perf_counter()
        try:
            self.ws = self._stack.enter_context(
                connect(
                    f"{base}/ws", subprotocols=[SUBPROTOCOL[self.codec]],  # type: ignore[list-item]
                    compression=None, open_timeout=REQUEST_TIMEOUT, close_timeout=2,
                )
            )  # fmt: skip
            self._send({"type": "hello", "token": token, "client": f"locust/{self.name}"})
            welcome = self.decode(self.ws.recv(timeout=REQUEST_TIMEOUT))
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"no welcome: {welcome}")
        except Exception as exc:
            self.user.report("hello", t0, exc=exc)
            raise
        self.device_id = welcome["deviceId"]
        self.last_seq = self.acked = welcome["headSeq"]
        self.user.report("hello", t0)
        self.reader = gevent.spawn(self._read)

    def _send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        data = self.encode(frame)
        self.ws.send(data.decode() if self.codec == "json" else data)

    def request(self, name: str, frame: dict[str, Any]) -> Any:
        """Send a request, wait for its reply, report it under ``name``."""
        rid = next(self.ids)
        frame["id"] = rid
        result: AsyncResult = AsyncResult()
        t0 = time.perf_counter()
        self.pending[rid] = (result, t0)
        try:
            self._send(frame)
            data = result.get(timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            self.pending.pop(rid, None)
            self.user.report(name, t0, exc=exc)
            return None
        self.user.report(name, t0)
        return data

    def _read(self) -> None:
        assert self.ws is not None
        try:
            while True:
                self._on_frame(self.decode(self.ws.recv()))
        except ConnectionClosed as exc:
            if not self.user.stopping:
                code = exc.rcvd.code if exc.rcvd else None
                self.user.report("socket closed", time.perf_counter(), exc=f"closed {code}")
        finally:
            for result, _ in self.pending.values():
                result.set_exception(ConnectionError("socket closed"))
            self.pending.clear()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("reply", "error"):
            entry = self.pending.pop(frame.get("id"), None)  # type: ignore[arg-type]
            if entry is not None:
                if kind == "reply":
                    entry[0].set(frame.get("data"))
                else:
                    entry[0].set_exception(
                        RuntimeError(f"{frame.get('code')}: {frame.get('message')}")
                    )
        elif kind == "event":
            self.last_seq = frame["seq"]
            data = frame.get("data") or {}
            if frame.get("event") == "message.created":
                sent = _SENT_MESSAGES.get(data.get("clientMsgId") or "")
                if sent is not None and sent[1] != id(self):
                    self.user.report("deliver message.created", sent[0])
            if self.last_seq - self.acked >= 20:
                self.ack()
        elif kind == "signal" and frame.get("signal") == "typing":
            sender = (frame.get("data") or {}).get("deviceId")
            sent_at = _SENT_TYPING.get(sender or "")
            if sent_at is not None:
                self.user.report("deliver typing", sent_at)

    def ack(self) -> None:
        if self.ws is not None and self.last_seq > self.acked:
            self.acked = self.last_seq
            with contextlib.suppress(ConnectionClosed):
                self._send({"type": "ack", "seq": self.acked})

    def close(self) -> None:
        if self.ws is not None:
            self.ack()
        self._stack.close()
        if self.reader is not None:
            self.reader.join(timeout=3)


class SocketUser(User):
    """A person on their phone (the acting device) with their laptop open (listening)."""

    wait_time = between(1, 4)
    weight = 1

    def on_start(self) -> None:
        self.stopping = False
        self.account = next_account()
        base = (self.host or "http://127.0.0.1:8080").rstrip("/")
        self.ws_base = "ws" + base[4:] if base.startswith("http") else base
        options = self.environment.parsed_options
        codec = options.ws_codec if options else "json"
        import requests  # locust's own dependency; gevent-patched

        self.base = base
        self.http = requests.Session()
        token = self.token = self.account.fresh_token(self._refresh)
        self.phone = Device(self, "phone", codec)
        self.laptop = Device(self, "laptop", codec)
        self.phone.open(self.ws_base, token)
        self.laptop.open(self.ws_base, token)
        memory = self.phone.request("memory.create", {"type": "memory.create", "title": "Chat"})
        self.memory_id = memory["id"] if memory else str(uuid.uuid4())

    def on_stop(self) -> None:
        self.stopping = True
        for device in (self.phone, self.laptop):
            device.close()

    def report(self, name: str, t0: float, *, exc: Any = None, kind: str = "WS") -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=0,
            exception=exc,
            context={},
        )

    def _refresh(self, refresh_token: str) -> dict[str, Any] | None:
        t0 = time.perf_counter()
        try:
            resp = self.http.post(
                f"{self.base}/api/auth/refresh", json={"refreshToken": refresh_token}, timeout=10
            )
        except Exception as exc:
            self.report("/api/auth/refresh", t0, exc=exc, kind="POST")
            return None
        ok = resp.status_code == 200
        self.report("/api/auth/refresh", t0, exc=None if ok else resp.status_code, kind="POST")
        return resp.json() if ok else None  # type: ignore[no-any-return]

    def _keep_token(self) -> None:
        token = self.account.fresh_token(self._refresh)
        if token != self.token:
            self.token = token
            for device in (self.phone, self.laptop):
                device.request("auth.refresh", {"type": "auth.refresh", "accessToken": token})

    @task(3)
    def send_message(self) -> None:
        self._keep_token()
        cid = uuid.uuid4().hex
        _SENT_MESSAGES[cid] = (time.perf_counter(), id(self.phone))
        self.phone.request(
            "message.send",
            {
                "type": "message.send",
                "memoryId": self.memory_id,
                "clientMsgId": cid,
                "content": "On my way, see you at the bakery!",
                "messageType": "text",
            },
        )
        gevent.spawn_later(30, _SENT_MESSAGES.pop, cid, None)

    @task(4)
    def typing(self) -> None:
        _SENT_TYPING[self.phone.device_id] = time.perf_counter()
        self.phone.request("typing", {"type": "typing", "memoryId": self.memory_id})

    @task(2)
    def history(self) -> None:
        self.phone.request(
            "message.history",
            {"type": "message.history", "memoryId": self.memory_id, "limit": 50},
        )
