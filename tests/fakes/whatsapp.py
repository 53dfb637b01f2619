"""A local WhatsApp Cloud API (Meta Graph API) and a driver that posts webhooks as Meta does.

`FakeGraph` speaks the wire formats of the real endpoints under a pinned version prefix
(``{url}/v21.0``, what ``WHATSAPP_GRAPH_URL`` points at):

- ``POST /{phone-number-id}/messages`` ``{messaging_product, to, type: "text", text}`` ->
  ``{messaging_product, contacts: [{input, wa_id}], messages: [{id: "wamid..."}]}``.
- ``GET /{media-id}`` -> ``{url, mime_type, sha256, file_size, id, messaging_product}``; the
  url (``/whatsapp_business/attachments/?mid=...``, like Meta's lookaside host) needs the
  same bearer token.
- ``GET /{phone-number-id}`` -> ``{verified_name, display_phone_number, quality_rating, id}``.
- ``GET /{waba-id}/phone_numbers`` -> ``{data: [...], paging: {cursors: {before, after},
  next?}}``: Graph's cursor paging, at most ``page_size`` numbers a page (``limit`` can only
  lower it), ``next`` only while more follow; ``after`` continues.
- Errors as Graph sends them: ``{error: {message, type, code, error_subcode?,
  error_data?, fbtrace_id}}`` (190 bad token, 100/33 unknown object, 100 bad parameter).

`FakeGraph.fail` queues failures for an endpoint: ``"429"`` (throughput, code 130429,
optionally with Retry-After), ``"500"`` (code 1), ``"131047"`` (re-engagement window, HTTP
400) or ``"190"`` (expired token, HTTP 401); for ``download``, ``"corrupt"`` serves the
media with its last byte changed (no longer matching the lookup's ``sha256``).

`WebhookDriver` builds ``whatsapp_business_account`` payloads (messages of every type,
statuses with errors) and posts them signed with ``X-Hub-Signature-256`` over the exact
bytes, escaped the way Meta escapes them (``\\/`` and ``\\uXXXX``), so a server that
re-serialises the JSON before checking would fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes import base_url, serve_on_loopback

VERSION = "v21.0"
WABA_ID = "102290129340398"


def _wamid() -> str:
    raw = b"\x15\x02\x00\x11\x18\x12" + secrets.token_bytes(18) + b"\x00"
    return "wamid.HBgL" + base64.b64encode(raw).decode()


def _trace() -> str:
    return base64.b64encode(secrets.token_bytes(12)).decode().rstrip("=")


@dataclass
class Failure:
    kind: str  # "429" | "500" | "131047" | "190" | "lost" (sent, but the answer is lost)
    retry_after: float | None = None


@dataclass
class Sent:
    phone_number_id: str
    to: str
    body: str
    wamid: str
    callback: str | None
    at: float


@dataclass
class Media:
    data: bytes
    mime_type: str

    @property
    def sha256_hex(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def sha256_b64(self) -> str:  # what inbound webhooks carry
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()


@dataclass
class FakeGraph:
    token: str = field(default_factory=lambda: "EAAG" + secrets.token_urlsafe(40))
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, Media] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    accounts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    page_size: int = 25  # the most numbers one phone_numbers page holds
    url: str = ""
    _failures: dict[str, deque[Failure]] = field(default_factory=lambda: defaultdict(deque))
    _runner: web.AppRunner | None = None

    # -- test-side API ----------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What WHATSAPP_GRAPH_URL points at: the base with the pinned version."""
        return f"{self.url}/{VERSION}"

    def add_number(
        self, display: str | None = None, name: str = "Memory Test", account: str = WABA_ID
    ) -> str:
        number_id = str(10**14 + secrets.randbelow(9 * 10**14))
        self.accounts[account].append(number_id)
        self.numbers[number_id] = {
            "verified_name": name,
            "code_verification_status": "VERIFIED",
            "display_phone_number": display or f"+1 555-{secrets.randbelow(10**4):04d}",
            "quality_rating": "GREEN",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
            "id": number_id,
        }
        return number_id

    def add_media(self, data: bytes, mime_type: str) -> tuple[str, Media]:
        media_id = str(10**15 + secrets.randbelow(9 * 10**15))
        self.media[media_id] = item = Media(data, mime_type)
        return media_id, item

    def fail(
        self, endpoint: str, kind: str, times: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next ``times`` calls of ``endpoint`` (send, media, download, number)
        with the failure ``kind``."""
        for _ in range(times):
            self._failures[endpoint].append(Failure(kind, retry_after))

    def sent_to(self, phone_number_id: str) -> list[Sent]:
        return [s for s in self.sent if s.phone_number_id == phone_number_id]

    def send_attempts(self, phone_number_id: str) -> int:
        path = f"/{VERSION}/{phone_number_id}/messages"
        return sum(1 for m, p, _ in self.requests if m == "POST" and p == path)

    # -- server -----------------------------------------------------------------------

    async def start(self) -> FakeGraph:
        app = web.Application(middlewares=[self._record])
        app.router.add_post(f"/{VERSION}/{{id}}/messages", self._send)
        app.router.add_get(f"/{VERSION}/{{id}}/phone_numbers", self._phone_numbers)
        app.router.add_get(f"/{VERSION}/{{id}}", self._object)
        app.router.add_get("/whatsapp_business/attachments/", self._download)
        self._runner = await serve_on_loopback(app)
        self.url = base_url(self._runner)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        self.requests.append((request.method, request.path, response.status))
        return response

    # -- errors exactly as Graph sends them ----------------------------------------------

    @staticmethod
    def _error(
        status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {**body, "fbtrace_id": _trace()}
        return web.json_response({"error": body}, status=status, headers=headers)

    def _injected(self, endpoint: str) -> web.Response | None:
        queue = self._failures[endpoint]
        if not queue:
            return None
        failure = queue.popleft()
        if failure.kind == "429":
            headers = None
            if failure.retry_after is not None:
                headers = {"Retry-After": str(failure.retry_after)}
            return self._error(
                429,
                {
                    "message": "(#130429) Rate limit hit",
                    "type": "OAuthException",
                    "code": 130429,
                    "error_data": {
                        "messaging_product": "whatsapp",
                        "details": "Cloud API message throughput has been reached.",
                    },
                },
                headers,
            )
        if failure.kind == "500":
            return self._error(
                500,
                {"message": "An unknown error has occurred.", "type": "OAuthException",
                 "code": 1, "error_subcode": 99},
            )  # fmt: skip
        if failure.kind == "131047":
            return self._error(
                400,
                {
                    "message": "(#131047) Re-engagement message",
                    "type": "OAuthException",
                    "code": 131047,
                    "error_data": {
                        "messaging_product": "whatsapp",
                        "details": "Message failed to send because more than 24 hours have "
                        "passed since the customer last replied to this number.",
                    },
                },
            )
        if failure.kind == "190":
            return self._bad_token()
        raise AssertionError(f"unknown failure {failure.kind}")

    def _bad_token(self) -> web.Response:
        return self._error(
            401,
            {"message": "Error validating access token: Session has expired.",
             "type": "OAuthException", "code": 190, "error_subcode": 463},
        )  # fmt: skip

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token, self.token)

    def _unknown(self, object_id: str) -> web.Response:
        return self._error(
            400,
            {
                "message": f"Unsupported get request. Object with ID '{object_id}' does not "
                "exist, cannot be loaded due to missing permissions, or does not support this "
                "operation. Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api",
                "type": "GraphMethodException",
                "code": 100,
                "error_subcode": 33,
            },
        )

    def _bad_parameter(self, what: str) -> web.Response:
        return self._error(
            400,
            {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100,
             "error_data": {"messaging_product": "whatsapp", "details": what}},
        )  # fmt: skip

    # -- endpoints ------------------------------------------------------------------------

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_token()
        number_id = request.match_info["id"]
        if number_id not in self.numbers:
            return self._unknown(number_id)
        lost = self._failures["send"] and self._failures["send"][0].kind == "lost"
        injected = None if lost else self._injected("send")
        if injected is not None:
            return injected
        try:
            body = await request.json()
        except ValueError:
            return self._bad_parameter("The request body is not JSON")
        if body.get("messaging_product") != "whatsapp":
            return self._bad_parameter("messaging_product is required")
        to = body.get("to")
        text = (body.get("text") or {}).get("body")
        if not to or body.get("type", "text") != "text" or not text or len(text) > 4096:
            return self._bad_parameter("Parameter value is not valid")
        sent = Sent(number_id, str(to), text, _wamid(), body.get("biz_opaque_callback_data"),
                    time.monotonic())  # fmt: skip
        self.sent.append(sent)
        if lost:  # Meta took the message; the connection drops before its answer
            self._failures["send"].popleft()
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=200)  # never reaches the client
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": sent.wamid}],
            }
        )

    async def _object(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_token()
        object_id = request.match_info["id"]
        if object_id in self.media:
            injected = self._injected("media")
            if injected is not None:
                return injected
            item = self.media[object_id]
            lookaside = (
                f"{self.url}/whatsapp_business/attachments/?mid={object_id}"
                f"&ext={int(time.time())}&hash={secrets.token_urlsafe(16)}"
            )
            return web.json_response(
                {
                    "url": lookaside,
                    "mime_type": item.mime_type,
                    "sha256": item.sha256_hex,
                    "file_size": len(item.data),
                    "id": object_id,
                    "messaging_product": "whatsapp",
                }
            )
        if object_id in self.numbers:
            injected = self._injected("number")
            if injected is not None:
                return injected
            info = self.numbers[object_id]
            wanted = request.query.get("fields")
            if wanted:
                info = {k: v for k, v in info.items() if k in wanted.split(",") or k == "id"}
            return web.json_response(info)
        return self._unknown(object_id)

    async def _phone_numbers(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_token()
        account = request.match_info["id"]
        if account not in self.accounts:
            return self._unknown(account)
        injected = self._injected("phone_numbers")
        if injected is not None:
            return injected
        ids = self.accounts[account]
        try:
            limit = min(self.page_size, max(1, int(request.query.get("limit", "25"))))
            start = int(base64.b64decode(request.query.get("after", "")) or b"0")
        except ValueError:
            return self._bad_parameter("Invalid cursor")
        wanted = request.query.get("fields")
        page = []
        for number_id in ids[start : start + limit]:
            info = self.numbers[number_id]
            if wanted:
                info = {k: v for k, v in info.items() if k in wanted.split(",") or k == "id"}
            page.append(info)
        end = start + len(page)
        body: dict[str, Any] = {"data": page}
        if page:  # Graph sends cursors with a page, ``next`` only when another follows
            cursor = {"before": base64.b64encode(str(start).encode()).decode(),
                      "after": base64.b64encode(str(end).encode()).decode()}  # fmt: skip
            body["paging"] = {"cursors": cursor}
            if end < len(ids):
                body["paging"]["next"] = (
                    f"{self.api_url}/{account}/phone_numbers?limit={limit}&after={cursor['after']}"
                )
        return web.json_response(body)

    async def _download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401, text="Unauthorized")
        item = self.media.get(request.query.get("mid", ""))
        if item is None:
            return web.Response(status=404, text="Not Found")
        queue = self._failures["download"]
        data = item.data
        if queue and queue[0].kind == "corrupt":  # damaged on the way: Meta's sha256 no match
            queue.popleft()
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        else:
            injected = self._injected("download")
            if injected is not None:
                return injected
        return web.Response(body=data, content_type=item.mime_type.split(";")[0])


# -- webhooks as Meta posts them -----------------------------------------------------------


def meta_json(payload: Any) -> bytes:
    """JSON as Meta's webhooks carry it: compact, ASCII-only, ``/`` escaped as ``\\/``."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return text.replace("/", "\\/").encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Posted:
    status: int
    body: Any  # the parsed JSON, or None
    text: str
    headers: dict[str, str] = field(default_factory=dict)


class WebhookDriver:
    def __init__(self, session: aiohttp.ClientSession, server_url: str, app_secret: str) -> None:
        self.session = session
        self.url = f"{server_url}/api/webhooks/whatsapp"
        self.app_secret = app_secret

    # -- payloads ---------------------------------------------------------------------

    @staticmethod
    def envelope(phone_number_id: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA_ID,
                    "changes": [
                        {
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": phone_number_id,
                                },
                                **value,
                            },
                            "field": "messages",
                        }
                    ],
                }
            ],
        }

    def message(
        self,
        phone_number_id: str,
        *,
        wa_id: str,
        name: str | None,
        type: str = "text",
        content: dict[str, Any] | None = None,
        wamid: str | None = None,
        context: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One inbound message. ``content`` is the object under the type's key
        (``{"body": ...}`` for text, ``{"id", "mime_type", "sha256", ...}`` for media)."""
        message: dict[str, Any] = {
            "from": wa_id,
            "id": wamid or _wamid(),
            "timestamp": str(int(time.time())),
            "type": type,
            **extra,
        }
        if content is not None:
            message[type] = content
        if context is not None:
            message["context"] = {"from": "15550783881", "id": context}
        value: dict[str, Any] = {"messages": [message]}
        if name is not None:
            value["contacts"] = [{"profile": {"name": name}, "wa_id": wa_id}]
        return self.envelope(phone_number_id, value)

    def text(self, phone_number_id: str, *, wa_id: str, name: str | None, body: str,
             wamid: str | None = None) -> dict[str, Any]:  # fmt: skip
        return self.message(
            phone_number_id, wa_id=wa_id, name=name, content={"body": body}, wamid=wamid
        )

    def status(
        self,
        phone_number_id: str,
        *,
        wamid: str,
        status: str,
        recipient_id: str,
        errors: list[dict[str, Any]] | None = None,
        callback: str | None = None,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": recipient_id,
        }
        if status != "failed":
            item["conversation"] = {
                "id": uuid.uuid4().hex,
                "origin": {"type": "service"},
            }
            item["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
        if errors is not None:
            item["errors"] = errors
        if callback is not None:
            item["biz_opaque_callback_data"] = callback
        return self.envelope(phone_number_id, {"statuses": [item]})

    @staticmethod
    def reengagement_error() -> dict[str, Any]:
        return {
            "code": 131047,
            "title": "Re-engagement message",
            "message": "Re-engagement message",
            "error_data": {
                "details": "Message failed to send because more than 24 hours have passed "
                "since the customer last replied to this number."
            },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }

    # -- posting ----------------------------------------------------------------------

    async def post(
        self,
        payload: Any = None,
        *,
        raw: bytes | None = None,
        signature: str | None = "valid",
        secret: str | None = None,
    ) -> Posted:
        """POST as Meta does; ``signature="valid"`` signs the bytes with the app secret (or
        ``secret``), None sends no signature header, anything else is sent as given."""
        body = raw if raw is not None else meta_json(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}
        if signature == "valid":
            headers["X-Hub-Signature-256"] = sign(secret or self.app_secret, body)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Posted(resp.status, parsed, text, dict(resp.headers))

    async def verify(self, params: dict[str, str]) -> Posted:
        async with self.session.get(self.url, params=params) as resp:
            text = await resp.text()
            parsed = await resp.json() if resp.content_type == "application/json" else None
            return Posted(resp.status, parsed, text, dict(resp.headers))
