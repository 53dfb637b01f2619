"""One encoder/decoder pair per codec: JSON (text frames) and MessagePack (binary frames).

Decoders are built once, for the whole client frame union, and turn every failure into a
`ProtocolError` naming the problem (and, when the frame got that far, its ``id``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from memoryd.errors import ValidationFailed
from memoryd.protocol import frames as f
from memoryd.protocol.errors import ErrorCode, ProtocolError
from memoryd.protocol.frames import ClientFrame, ServerFrame
from memoryd.protocol.validation import parse

SUBPROTOCOL_JSON = "memoryd.v1.json"
SUBPROTOCOL_MSGPACK = "memoryd.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


class _Envelope(msgspec.Struct):
    """Lenient view of a rejected frame, to find out which request to blame."""

    type: Any = None
    id: Any = None


class Codec:
    """Encode server frames and decode client frames in one wire format."""

    name: str
    subprotocol: str
    binary: bool

    def __init__(self, encoder: Any, decoder: Any, envelope: Any, untyped: Any) -> None:
        self._encode = encoder.encode
        self._decoder = decoder
        self._envelope = envelope
        self._untyped = untyped

    def encode(self, frame: ServerFrame) -> bytes:
        return self._encode(frame)  # type: ignore[no-any-return]

    def decode(self, data: bytes | str, *, max_bytes: int | None = None) -> ClientFrame:
        """Decode one client frame; raise `ProtocolError` for anything unacceptable."""
        if max_bytes is not None and len(data) > max_bytes:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {len(data)} bytes exceeds the limit of {max_bytes}",
                request_id=self._request_id(data),
            )
        try:
            return self._decoder.decode(data)  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            raise self._validation_error(data, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(ErrorCode.INVALID_FRAME, f"malformed {self.name}: {exc}") from None

    def _request_id(self, data: bytes | str) -> str | int | None:
        """The ``id`` of a frame we will not decode fully, when it has a usable one."""
        try:
            found = self._envelope.decode(data).id
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if isinstance(found, bool) or not isinstance(found, str | int):
            return None
        return found

    def _validation_error(self, data: bytes | str, text: str) -> ProtocolError:
        try:
            envelope = self._envelope.decode(data)
        except msgspec.ValidationError:
            return ProtocolError(ErrorCode.INVALID_FRAME, f"a frame must be a map: {text}")
        except msgspec.DecodeError as exc:  # e.g. a map followed by trailing bytes
            return ProtocolError(ErrorCode.INVALID_FRAME, f"malformed {self.name}: {exc}")
        frame_type = envelope.type if isinstance(envelope.type, str) else None
        request_id = envelope.id if isinstance(envelope.id, str | int) else None
        if isinstance(request_id, bool):
            request_id = None
        match = _AT_PATH.search(text)
        field = match[1] if match else None
        missing = _MISSING.search(text)
        if missing:
            field = f"{field}.{missing[1]}" if field else missing[1]
        reason = text[: match.start()] if match else text
        if field == "type":
            code = ErrorCode.UNKNOWN_TYPE if frame_type else ErrorCode.INVALID_FRAME
            message = f"unknown frame type {envelope.type!r}" if frame_type else reason
            return ProtocolError(code, message, request_id=request_id)
        if "missing required field `type`" in text:
            return ProtocolError(
                ErrorCode.INVALID_FRAME, "a frame needs a type", request_id=request_id
            )
        details = [{"field": field, "message": reason}] if field else None
        frame_class = _FRAME_CLASSES.get(frame_type or "")
        if frame_class is not None:
            details = self._all_problems(data, frame_class) or details
        return ProtocolError(
            ErrorCode.VALIDATION_FAILED,
            f"invalid {frame_type or 'frame'}: {text}",
            request_id=request_id,
            frame_type=frame_type,
            details=details,
        )

    def _all_problems(self, data: bytes | str, frame_class: type[msgspec.Struct]) -> Any:
        """Every problem of a rejected frame, as REST reports them (error path only)."""
        try:
            body = self._untyped.decode(data)
            parse(frame_class, {k: v for k, v in body.items() if k != "type"})
        except ValidationFailed as exc:
            return exc.details
        except (msgspec.DecodeError, msgspec.ValidationError, AttributeError):
            return None
        return None


_FRAME_CLASSES: dict[str, type[msgspec.Struct]] = {
    cls.__struct_config__.tag: cls  # type: ignore[attr-defined,misc]
    for cls in (f.Hello, f.Ack, *f.REQUEST_TYPES)
}


class JsonCodec(Codec):
    name = "json"
    subprotocol = SUBPROTOCOL_JSON
    binary = False

    def __init__(self) -> None:
        super().__init__(
            msgspec.json.Encoder(),
            msgspec.json.Decoder(ClientFrame),
            msgspec.json.Decoder(_Envelope),
            msgspec.json.Decoder(),
        )


class MsgpackCodec(Codec):
    name = "msgpack"
    subprotocol = SUBPROTOCOL_MSGPACK
    binary = True

    def encode(self, frame: ServerFrame) -> bytes:
        # MessagePack would carry datetimes as its timestamp extension; timestamps are
        # RFC 3339 strings in both codecs, the same whether live or replayed from the log.
        return self._encode(msgspec.to_builtins(frame, builtin_types=(bytes,)))  # type: ignore[no-any-return]

    def __init__(self) -> None:
        super().__init__(
            msgspec.msgpack.Encoder(),
            msgspec.msgpack.Decoder(ClientFrame),
            msgspec.msgpack.Decoder(_Envelope),
            msgspec.msgpack.Decoder(),
        )


JSON = JsonCodec()
MSGPACK = MsgpackCodec()
CODECS: dict[str, Codec] = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def codec_for(subprotocol: str | None) -> Codec:
    """The codec of a negotiated subprotocol; no subprotocol means JSON."""
    return CODECS.get(subprotocol or "", JSON)
