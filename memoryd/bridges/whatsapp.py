"""WhatsApp Cloud API (Meta Graph API): send text, fetch media, look up phone numbers, and
read Meta's webhook payloads (`parse_webhook`).

Wire formats (https://developers.facebook.com/docs/whatsapp/cloud-api):

- ``POST /{phone-number-id}/messages`` ``{messaging_product: "whatsapp", to, type: "text",
  text: {body}}`` -> ``{messaging_product, contacts: [{input, wa_id}], messages: [{id}]}``.
- ``GET /{media-id}`` -> ``{url, mime_type, sha256, file_size, id, messaging_product}``;
  the ``url`` is short-lived and is fetched with the same bearer token.
- ``GET /{phone-number-id}`` -> ``{id, display_phone_number, verified_name, ...}``.
- ``GET /{waba-id}/phone_numbers`` -> ``{data: [{id, display_phone_number, ...}],
  paging: {cursors: {before, after}, next?}}``: ``next`` only while more pages follow.
- Errors: ``{error: {message, type, code, error_subcode?, error_data?, fbtrace_id}}``.

The base URL (``WHATSAPP_GRAPH_URL``) carries a pinned API version, so a test points it at
a local fake and a deployment upgrades the version on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from memoryd.crypto import SecretBox

# Graph error codes that mean "later", whatever the HTTP status: API unknown/temporarily
# unavailable (1, 2), rate limits (4, 80007, 130429 throughput, 131056 pair rate),
# "something went wrong" (131000) and service unavailable (131016).
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})
_TITLE = re.compile(r"^\(#\d+\)\s*")
_CHUNK = 64 * 1024
_DOWNLOAD = aiohttp.ClientTimeout(total=600, connect=10, sock_read=60)  # up to 100 MB
_T = TypeVar("_T")


class GraphError(Exception):
    """The Graph API refused a call, or could not be reached (``status == 0``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        error_type: str | None = None,
        details: str | None = None,
        fbtrace_id: str | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        # The request may have reached Meta and been acted on (no answer, or an unreadable
        # one): a send that failed this way may have been delivered.
        self.ambiguous = ambiguous
        self.status = status
        self.message = message
        self.code = code
        self.subcode = subcode
        self.error_type = error_type
        self.details = details
        self.fbtrace_id = fbtrace_id
        self.retry_after = retry_after

    @property
    def title(self) -> str:
        """The message without its ``(#131047)`` prefix: "Re-engagement message"."""
        return _TITLE.sub("", self.message)

    @property
    def transient(self) -> bool:
        """Worth retrying: unreachable, 429, a 5xx, or a throttling / outage error code."""
        return (
            self.status == 0
            or self.status == 429
            or self.status >= 500
            or (self.code is not None and self.code in TRANSIENT_CODES)
        )

    def as_metadata(self) -> dict[str, Any]:
        """What a failed message carries in ``metadata.whatsappError``."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.message,
            "details": self.details,
        }


@dataclass(frozen=True)
class SentMessage:
    wamid: str
    wa_id: str | None


@dataclass(frozen=True)
class MediaInfo:
    id: str
    url: str
    mime_type: str
    sha256: str | None
    file_size: int | None


class GraphClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")

    async def send_text(
        self,
        token: str,
        phone_number_id: str,
        to: str,
        body: str,
        *,
        callback_data: str | None = None,
    ) -> SentMessage:
        """Send a text message; ``callback_data`` comes back in its status webhooks
        (``biz_opaque_callback_data``), so a status can be matched even before the
        wamid is recorded."""
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": body},
        }
        if callback_data is not None:
            payload["biz_opaque_callback_data"] = callback_data
        data = await self._call("POST", f"/{_segment(phone_number_id)}/messages", token, payload)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages or "id" not in messages[0]:
            raise GraphError(502, "Graph API answered a send without a message id")
        contacts = data.get("contacts") or [{}]
        return SentMessage(wamid=str(messages[0]["id"]), wa_id=contacts[0].get("wa_id"))

    async def phone_number(self, token: str, phone_number_id: str) -> dict[str, Any]:
        """The business phone number: ``{id, display_phone_number, verified_name, ...}``."""
        fields = "id,display_phone_number,verified_name,quality_rating"
        path = f"/{_segment(phone_number_id)}?fields={fields}"
        return await self._call("GET", path, token)

    async def phone_numbers(
        self, token: str, business_account_id: str, *, max_pages: int = 20
    ) -> list[dict[str, Any]]:
        """Every phone number of a WhatsApp Business Account, following Graph's cursor
        paging (``paging.cursors.after`` while ``paging.next`` is present)."""
        numbers: list[dict[str, Any]] = []
        after: str | None = None
        base = f"/{_segment(business_account_id)}/phone_numbers"
        for _ in range(max_pages):
            query = "fields=id,display_phone_number,verified_name&limit=100"
            if after:
                query += f"&after={quote(after, safe='')}"
            data = await self._call("GET", f"{base}?{query}", token)
            page = data.get("data")
            if not isinstance(page, list):
                raise GraphError(502, "Graph API answered a phone number list without data")
            numbers += [n for n in page if isinstance(n, dict)]
            paging = _object(data.get("paging"))
            after = _object(paging.get("cursors")).get("after")
            if not isinstance(after, str):
                after = None
            if not paging.get("next") or not after:
                break
        return numbers

    async def media(self, token: str, media_id: str) -> MediaInfo:
        data = await self._call("GET", f"/{_segment(media_id)}", token)
        if not isinstance(data.get("url"), str):
            raise GraphError(502, "Graph API answered a media lookup without a url")
        size = data.get("file_size")
        return MediaInfo(
            id=str(data.get("id", media_id)),
            url=data["url"],
            mime_type=str(data.get("mime_type") or "application/octet-stream"),
            sha256=data.get("sha256"),
            file_size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        )

    async def stream(
        self, token: str, url: str, *, max_bytes: int, sha256: str | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of ``url`` (a media url, fetched with the bearer token), in chunks.

        Raises `GraphError` from inside the iteration: 413 past ``max_bytes``, 502 when
        the whole does not hash to ``sha256`` (Meta's hex digest, checked after the last
        chunk and before the iteration ends), 0 when the connection breaks. A blob store's
        ``put_stream`` discards what it got when its iterator raises, so a download that
        is too large, broken or corrupt never becomes a stored file."""
        digest = hashlib.sha256()
        size = 0
        try:
            async with self._session.get(url, headers=_auth(token), timeout=_DOWNLOAD) as resp:
                if resp.status != 200:
                    raise await _error(resp)
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise GraphError(413, f"media larger than {max_bytes} bytes")
                    digest.update(chunk)
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GraphError(0, f"media download failed: {type(exc).__name__}") from None
        expected = _hex_digest(sha256)
        if expected is not None and expected != digest.hexdigest():
            raise GraphError(502, "media checksum mismatch")

    async def _call(
        self, method: str, path: str, token: str, payload: Any = None
    ) -> dict[str, Any]:
        try:
            async with self._session.request(
                method, self.base_url + path, json=payload, headers=_auth(token)
            ) as resp:
                if resp.status != 200:
                    raise await _error(resp)
                data = await resp.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
            raise GraphError(0, f"Graph API unreachable: {type(exc).__name__}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GraphError(
                0, f"Graph API gave no answer: {type(exc).__name__}", ambiguous=True
            ) from None
        if not isinstance(data, dict):
            raise GraphError(502, "Graph API answered with no JSON object", ambiguous=True)
        return data


def _hex_digest(sha256: str | None) -> str | None:
    """Meta's sha256 as hex: the media lookup gives hex, webhooks give base64; anything
    else (absent, malformed) is not checked."""
    value = sha256.strip() if isinstance(sha256, str) else ""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    with contextlib.suppress(ValueError):
        raw = base64.b64decode(value, validate=True)
        if len(raw) == 32:
            return raw.hex()
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _error(resp: aiohttp.ClientResponse) -> GraphError:
    retry_after = None
    with contextlib.suppress(ValueError):
        retry_after = float(resp.headers.get("Retry-After", ""))
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(resp.status, f"HTTP {resp.status}", retry_after=retry_after)
    data = error.get("error_data")
    code, subcode = error.get("code"), error.get("error_subcode")
    return GraphError(
        resp.status,
        str(error.get("message") or f"HTTP {resp.status}"),
        code=code if isinstance(code, int) else None,
        subcode=subcode if isinstance(subcode, int) else None,
        error_type=error.get("type"),
        details=data.get("details") if isinstance(data, dict) else None,
        fbtrace_id=error.get("fbtrace_id"),
        retry_after=retry_after,
    )


class Throttle:
    """A token bucket per key (phone number id): ``rate`` sends per second, bursts of
    ``burst``. In-process: each node keeps its own buckets."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens: dict[str, float] = {}
        self._updated: dict[str, float] = {}

    def reserve(self, key: str) -> float:
        """Take a token; return how long to wait before using it (0 when available now)."""
        now = time.monotonic()
        tokens = self._tokens.get(key, self.burst)
        tokens = min(self.burst, tokens + (now - self._updated.get(key, now)) * self.rate)
        tokens -= 1.0
        self._tokens[key] = tokens
        self._updated[key] = now
        return 0.0 if tokens >= 0 else -tokens / self.rate

    def release(self, key: str) -> None:
        """Give back a reserved token that will not be used."""
        self._tokens[key] = min(self.burst, self._tokens.get(key, self.burst) + 1.0)


@dataclass
class WhatsAppBridge:
    """What the WhatsApp handlers need: the Graph client, the token box, the per-number
    throttle (media go to the blob store through `handlers.files.store_media`)."""

    graph: GraphClient
    box: SecretBox
    throttle: Throttle
    retry_base: float = 1.0  # seconds before the first retry; doubles each attempt
    max_throttle_wait: float = 2.0  # wait in the job up to this long, else retry later


# -- webhooks: Meta's payload, parsed item by item -------------------------------------------
#
# ``{object: "whatsapp_business_account", entry: [{id, changes: [{field: "messages",
# value: {messaging_product, metadata: {display_phone_number, phone_number_id},
# contacts: [{profile: {name}, wa_id}], messages: [...], statuses: [...], errors: [...]}}]}]}``
# (https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples).
# Each level is decoded from its raw bytes on its own, so one malformed entry, change,
# message or status is skipped (and counted) while the rest of the delivery is stored.

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class WebhookMalformed(ValueError):
    """The body is not a JSON object (``json`` false) or not JSON at all: nothing of the
    delivery can be read."""

    def __init__(self, message: str, *, json: bool) -> None:
        super().__init__(message)
        self.json = json


class _Envelope(msgspec.Struct):
    object: str = ""
    entry: list[msgspec.Raw] = []


class _Entry(msgspec.Struct):
    changes: list[msgspec.Raw] = []


class _Change(msgspec.Struct):
    field: str
    value: msgspec.Raw


class _Metadata(msgspec.Struct):
    phone_number_id: NonEmpty
    display_phone_number: str | None = None


class _Value(msgspec.Struct):
    metadata: _Metadata
    contacts: list[msgspec.Raw] = []
    messages: list[msgspec.Raw] = []
    statuses: list[msgspec.Raw] = []
    errors: list[Any] = []


class WebhookProfile(msgspec.Struct):
    name: str | None = None


class WebhookContact(msgspec.Struct):
    wa_id: NonEmpty
    profile: WebhookProfile | None = None


class WebhookMessage(msgspec.Struct):
    """The fields memoryd relies on; the whole object is kept as ``raw``."""

    id: NonEmpty
    from_: NonEmpty = msgspec.field(name="from")
    type: str = "unknown"
    timestamp: str | None = None


class WebhookStatus(msgspec.Struct):
    id: NonEmpty
    status: NonEmpty
    timestamp: str | None = None
    recipient_id: str | None = None
    biz_opaque_callback_data: str | None = None
    errors: list[dict[str, Any]] = []


@dataclass(frozen=True)
class InboundItem:
    """One message or status of a delivery: its typed fields and its raw JSON object."""

    phone_number_id: str
    kind: Literal["message", "status"]
    id: str  # the wamid (of the message, or of the message a status is about)
    state: str | None  # a status's ``status``
    raw: dict[str, Any]
    contact: dict[str, Any] | None = None  # a message's sender from ``contacts``


@dataclass
class WebhookDelivery:
    object: str
    items: list[InboundItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why each unreadable part was skipped
    errors: list[Any] = field(default_factory=list)  # ``value.errors`` Meta reported


_raw_object = msgspec.json.Decoder(dict[str, Any])


def _decode(raw: bytes | msgspec.Raw, kind: type[_T]) -> _T:
    return msgspec.json.decode(raw, type=kind)


def parse_webhook(body: bytes) -> WebhookDelivery:
    """Every readable message and status of a webhook body; what cannot be read is
    skipped with its reason. Raises `WebhookMalformed` only when the body itself is not a
    JSON object."""
    try:
        envelope = _decode(body, _Envelope)
    except msgspec.ValidationError as exc:
        raise WebhookMalformed(str(exc), json=True) from None
    except msgspec.DecodeError as exc:
        raise WebhookMalformed(str(exc), json=False) from None
    delivery = WebhookDelivery(object=envelope.object)
    if envelope.object != "whatsapp_business_account":
        return delivery
    for e, raw_entry in enumerate(envelope.entry):
        try:
            changes = _decode(raw_entry, _Entry).changes
        except msgspec.DecodeError as exc:
            delivery.skipped.append(f"entry[{e}]: {exc}")
            continue
        for c, raw_change in enumerate(changes):
            where = f"entry[{e}].changes[{c}]"
            try:
                change = _decode(raw_change, _Change)
                if change.field != "messages":
                    delivery.skipped.append(f"{where}: field {change.field!r}")
                    continue
                value = _decode(change.value, _Value)
            except msgspec.DecodeError as exc:
                delivery.skipped.append(f"{where}: {exc}")
                continue
            _read_value(delivery, where, value)
    return delivery


def _read_value(delivery: WebhookDelivery, where: str, value: _Value) -> None:
    number = value.metadata.phone_number_id
    delivery.errors.extend(value.errors)
    contacts: dict[str, dict[str, Any]] = {}
    for raw in value.contacts:
        try:
            contact = _decode(raw, WebhookContact)
        except msgspec.DecodeError:
            continue  # a sender without its contact still arrives, without a name
        contacts[contact.wa_id] = _raw_object.decode(raw)
    for m, raw in enumerate(value.messages):
        try:
            message = _decode(raw, WebhookMessage)
        except msgspec.DecodeError as exc:
            delivery.skipped.append(f"{where}.value.messages[{m}]: {exc}")
            continue
        delivery.items.append(
            InboundItem(number, "message", message.id, None, _raw_object.decode(raw),
                        contacts.get(message.from_))
        )  # fmt: skip
    for s, raw in enumerate(value.statuses):
        try:
            status = _decode(raw, WebhookStatus)
        except msgspec.DecodeError as exc:
            delivery.skipped.append(f"{where}.value.statuses[{s}]: {exc}")
            continue
        delivery.items.append(
            InboundItem(number, "status", status.id, status.status, _raw_object.decode(raw))
        )
