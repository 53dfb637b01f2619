"""Codecs, bytes in and frames out: every client frame in JSON and MessagePack, every way a
frame can be wrong, and the shape of server frames on the wire. No server, no I/O."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from memoryd.protocol import frames as f
from memoryd.protocol.codec import (
    JSON,
    MSGPACK,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Codec,
    codec_for,
)
from memoryd.protocol.errors import ErrorCode, ProtocolError

CODECS = [pytest.param(JSON, id="json"), pytest.param(MSGPACK, id="msgpack")]
MEMORY = str(uuid.uuid4())
OTHER = str(uuid.uuid4())


def wire(codec: Codec, obj: Any) -> bytes:
    """A client's bytes: a plain dict (camelCase keys) encoded without our structs."""
    return msgspec.json.encode(obj) if codec is JSON else msgspec.msgpack.encode(obj)


def from_wire(codec: Codec, data: bytes) -> Any:
    return msgspec.json.decode(data) if codec is JSON else msgspec.msgpack.decode(data)


# One valid frame of every client type, with every field it accepts set to a non-default.
VALID: dict[str, dict[str, Any]] = {
    "hello": {"token": "t0k", "deviceId": MEMORY, "lastSeq": 41, "client": "pytest"},
    "ack": {"seq": 7},
    "ping": {"id": 1},
    "presence": {"id": 1},
    "auth.refresh": {"id": "r-1", "accessToken": "fresh"},
    "typing": {"memoryId": MEMORY, "id": 9},
    "read": {"id": 2, "memoryId": MEMORY, "seq": 4},
    "memory.list": {
        "id": 3,
        "categoryId": OTHER,
        "page": 2,
        "limit": 10,
        "search": "trip",
        "tags": ["a", "b"],
        "isFavorite": True,
        "isArchived": False,
        "sortBy": "title",
        "sortOrder": "asc",
    },
    "memory.get": {"id": 4, "memoryId": MEMORY},
    "memory.create": {
        "id": 5,
        "title": "Trip",
        "description": "to the sea",
        "categoryId": OTHER,
        "content": {"blocks": [1, 2]},
        "tags": ["x"],
        "metadata": {"k": "v"},
        "isFavorite": True,
        "isArchived": True,
        "privacyLevel": "shared",
    },
    "memory.update": {"id": 6, "memoryId": MEMORY, "title": None, "tags": ["y"]},
    "memory.delete": {"id": 7, "memoryId": MEMORY},
    "category.list": {"id": 8},
    "category.create": {
        "id": 9,
        "name": "Work",
        "description": "d",
        "icon": "briefcase",
        "color": "#1A2B3C",
        "sortOrder": 3,
    },
    "category.update": {"id": 10, "categoryId": OTHER, "color": "#000000"},
    "category.delete": {"id": 11, "categoryId": OTHER},
    "message.send": {
        "id": 12,
        "memoryId": MEMORY,
        "clientMsgId": "c-1",
        "content": "hello",
        "messageType": "voice",
        "attachments": [OTHER],
        "metadata": {"lang": "en"},
        "parentId": OTHER,
        "ai": True,
    },
    "message.edit": {"id": 13, "messageId": OTHER, "content": "edited", "metadata": [1]},
    "message.delete": {"id": 14, "messageId": OTHER},
    "message.history": {"id": "h", "memoryId": MEMORY, "before": 30, "limit": 5},
    "ai.ask": {"id": 15, "memoryId": MEMORY, "content": "Where was it?", "clientMsgId": "q-1"},
    "ai.cancel": {"id": 16, "memoryId": MEMORY, "replyTo": OTHER},
    "search": {
        "id": 17,
        "q": "castle",
        "mode": "text",
        "limit": 5,
        "cursor": "eyJvIjo1fQ",
        "categoryId": OTHER,
        "tags": ["trip"],
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00Z",
    },
}


def _tags(union: Any) -> set[str]:
    return {t.__struct_config__.tag for t in union.__args__}


def test_the_table_covers_every_client_frame_type() -> None:
    assert set(VALID) == _tags(f.ClientFrame)
    assert len(f.REQUEST_TYPES) == len(_tags(f.Request)) == 21


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("frame_type", sorted(VALID))
def test_every_client_frame_decodes_from_a_plain_map(codec: Codec, frame_type: str) -> None:
    body = {"type": frame_type, **VALID[frame_type]}
    frame = codec.decode(wire(codec, body))
    assert type(frame).__struct_config__.tag == frame_type
    # Every field came through (under its snake_case name): encoding the decoded frame
    # gives back the same camelCase keys and values.
    back = msgspec.json.decode(msgspec.json.encode(frame))
    assert {k: back[k] for k in body} == body


@pytest.mark.parametrize("codec", CODECS)
def test_decoded_fields_are_typed_and_snake_case(codec: Codec) -> None:
    send = codec.decode(wire(codec, {"type": "message.send", **VALID["message.send"]}))
    assert isinstance(send, f.MessageSend)
    assert send.memory_id == uuid.UUID(MEMORY)
    assert send.client_msg_id == "c-1"
    assert send.attachments == [uuid.UUID(OTHER)]
    assert send.parent_id == uuid.UUID(OTHER)
    hello = codec.decode(wire(codec, {"type": "hello", "token": "t"}))
    assert isinstance(hello, f.Hello)
    assert (hello.device_id, hello.last_seq, hello.client) == (None, None, None)
    history = codec.decode(wire(codec, {"type": "message.history", "id": 0, "memoryId": MEMORY}))
    assert isinstance(history, f.MessageHistory)
    assert (history.id, history.before, history.limit) == (0, None, 50)


def test_msgpack_accepts_str_frames_only_as_bytes_and_json_accepts_text() -> None:
    assert isinstance(JSON.decode('{"type":"ping","id":1}'), f.Ping)
    assert isinstance(MSGPACK.decode(msgspec.msgpack.encode({"type": "ack", "seq": 1})), f.Ack)


# -- rejected frames ----------------------------------------------------------------------


def _reject(codec: Codec, data: bytes, **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode(data, **kw)
    return info.value


def _field(err: ProtocolError) -> str | None:
    assert isinstance(err.details, list) and len(err.details) == 1, err.details
    assert err.details[0]["message"]
    return err.details[0]["field"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "data",
    [b'{"type": "ping", "id": 1', b"{type: ping}", b"", b"\xff\xfe", b'{"type":"ping"} x'],
)
def test_malformed_json_is_an_invalid_frame(data: bytes) -> None:
    err = _reject(JSON, data)
    assert err.code == ErrorCode.INVALID_FRAME
    assert err.request_id is None
    assert "json" in err.message


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        b"\x82\xa4type",
        b"",
        msgspec.msgpack.encode({"type": "ping", "id": 1})[:-1],
        msgspec.msgpack.encode({"type": "ack"}) + b"\x01",  # trailing bytes
    ],
)
def test_invalid_msgpack_is_an_invalid_frame(data: bytes) -> None:
    err = _reject(MSGPACK, data)
    assert err.code == ErrorCode.INVALID_FRAME
    assert err.request_id is None
    assert "msgpack" in err.message


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("value", [[1, 2], "ping", 42, None, True])
def test_a_frame_that_is_not_a_map_is_invalid(codec: Codec, value: Any) -> None:
    err = _reject(codec, wire(codec, value))
    assert err.code == ErrorCode.INVALID_FRAME
    assert "map" in err.message


@pytest.mark.parametrize("codec", CODECS)
def test_a_frame_without_a_type_is_invalid_and_keeps_its_id(codec: Codec) -> None:
    err = _reject(codec, wire(codec, {"id": 7, "memoryId": MEMORY}))
    assert err.code == ErrorCode.INVALID_FRAME
    assert err.request_id == 7
    assert "type" in err.message


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bad_type", [3, None, ["ping"]])
def test_a_type_that_is_not_a_string_is_invalid(codec: Codec, bad_type: Any) -> None:
    err = _reject(codec, wire(codec, {"type": bad_type, "id": "r"}))
    assert err.code == ErrorCode.INVALID_FRAME
    assert err.request_id == "r"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("frame_type", ["nope", "message.sendx", "Ping", "welcome", "reply"])
def test_an_unknown_type_is_named_with_the_request_id(codec: Codec, frame_type: str) -> None:
    err = _reject(codec, wire(codec, {"type": frame_type, "id": "r-9"}))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert err.request_id == "r-9"
    assert repr(frame_type) in err.message


# (frame, the field the error must name)
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"type": "ping"}, "id"),
    ({"type": "ping", "id": True}, "id"),
    ({"type": "ping", "id": -1}, "id"),
    ({"type": "ping", "id": ""}, "id"),
    ({"type": "ping", "id": 1, "extra": 1}, "extra"),
    ({"type": "hello"}, "token"),
    ({"type": "hello", "token": ""}, "token"),
    ({"type": "hello", "token": "t", "deviceId": "not-a-uuid"}, "deviceId"),
    ({"type": "hello", "token": "t", "lastSeq": -1}, "lastSeq"),
    ({"type": "ack"}, "seq"),
    ({"type": "ack", "seq": "3"}, "seq"),
    ({"type": "auth.refresh", "id": 1}, "accessToken"),
    ({"type": "typing", "id": 1}, "memoryId"),
    ({"type": "read", "id": 1, "memoryId": MEMORY}, "seq"),
    ({"type": "memory.list", "id": 1, "limit": 0}, "limit"),
    ({"type": "memory.list", "id": 1, "sortOrder": "up"}, "sortOrder"),
    ({"type": "memory.get", "id": 1}, "memoryId"),
    ({"type": "memory.create", "id": 1, "tags": ["a", 3]}, "tags[1]"),
    ({"type": "memory.create", "id": 1, "privacyLevel": "secret"}, "privacyLevel"),
    ({"type": "memory.update", "id": 1, "memoryId": MEMORY, "title": 5}, "title"),
    ({"type": "memory.delete", "id": 1, "memoryId": 12}, "memoryId"),
    ({"type": "category.create", "id": 1}, "name"),
    ({"type": "category.create", "id": 1, "name": "n", "color": "red"}, "color"),
    ({"type": "category.update", "id": 1}, "categoryId"),
    ({"type": "category.delete", "id": 1, "categoryId": "x"}, "categoryId"),
    ({"type": "message.send", "id": 1, "memoryId": MEMORY, "content": "x"}, "clientMsgId"),
    ({"type": "message.send", "id": 1, "memoryId": MEMORY, "clientMsgId": "c"}, "content"),
    (
        {"type": "message.send", "id": 1, "memoryId": MEMORY, "clientMsgId": "c", "content": ""},
        "content",
    ),
    (
        {
            "type": "message.send",
            "id": 1,
            "memoryId": MEMORY,
            "clientMsgId": "c",
            "content": "x",
            "messageType": "video",
        },
        "messageType",
    ),
    ({"type": "message.edit", "id": 1, "content": "x"}, "messageId"),
    ({"type": "message.delete", "id": 1}, "messageId"),
    ({"type": "message.history", "id": 1, "memoryId": MEMORY, "limit": 101}, "limit"),
    ({"type": "ai.ask", "id": 1}, "memoryId"),
    ({"type": "ai.ask", "id": 1, "memoryId": MEMORY, "content": ""}, "content"),
    ({"type": "ai.cancel", "id": 1, "replyTo": "x"}, "replyTo"),
]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("body", "field"), INVALID, ids=[f"{b['type']}-{fld}" for b, fld in INVALID]
)
def test_missing_or_wrong_fields_name_the_field(
    codec: Codec, body: dict[str, Any], field: str
) -> None:
    err = _reject(codec, wire(codec, body))
    assert err.code == ErrorCode.VALIDATION_FAILED
    assert err.frame_type == body["type"]
    assert body["type"] in err.message
    assert _field(err) == field
    # The id is echoed so the client can match the error to its request (even an id out
    # of range); only a non-id (a boolean) is not.
    sent_id = body.get("id")
    assert err.request_id == (None if isinstance(sent_id, bool) else sent_id)


@pytest.mark.parametrize("codec", CODECS)
def test_an_oversized_frame_is_refused_before_it_is_parsed(codec: Codec) -> None:
    body = {"type": "message.send", "id": 1, "memoryId": MEMORY, "clientMsgId": "c"}
    data = wire(codec, {**body, "content": "x" * 2000})
    err = _reject(codec, data, max_bytes=1024)
    assert err.code == ErrorCode.FRAME_TOO_LARGE
    assert err.request_id == 1  # still found, so the client knows which request failed
    assert str(len(data)) in err.message and "1024" in err.message
    # Even bytes that are not a frame at all: the size check comes first.
    assert _reject(codec, b"\xc1" * 1025, max_bytes=1024).code == ErrorCode.FRAME_TOO_LARGE
    # At the limit exactly it is accepted.
    exact = wire(codec, {"type": "ping", "id": 1})
    assert isinstance(codec.decode(exact, max_bytes=len(exact)), f.Ping)


# -- server frames ------------------------------------------------------------------------

LIMITS = f.Limits(
    max_frame_bytes=65536,
    max_content_chars=10000,
    max_queue=1024,
    requests_per_second=20.0,
    request_burst=60,
    max_sockets_per_user=10,
)


@pytest.mark.parametrize("codec", CODECS)
def test_server_frames_are_camel_case_and_omit_absent_optionals(codec: Codec) -> None:
    user, device, session = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    welcome = f.Welcome(
        user_id=user,
        device_id=device,
        session_id=session,
        head_seq=12,
        heartbeat=30.0,
        limits=LIMITS,
    )
    assert from_wire(codec, codec.encode(welcome)) == {
        "type": "welcome",
        "userId": str(user),
        "deviceId": str(device),
        "sessionId": str(session),
        "headSeq": 12,
        "heartbeat": 30.0,
        "limits": {
            "maxFrameBytes": 65536,
            "maxContentChars": 10000,
            "maxQueue": 1024,
            "requestsPerSecond": 20.0,
            "requestBurst": 60,
            "maxSocketsPerUser": 10,
        },
    }
    resync = codec.encode(msgspec.structs.replace(welcome, resync=True))
    assert from_wire(codec, resync)["resync"] is True

    assert from_wire(codec, codec.encode(f.Error(code="invalid_frame", message="bad"))) == {
        "type": "error",
        "code": "invalid_frame",
        "message": "bad",
    }
    limited = f.Error(
        id=0, code="rate_limited", message="slow down", retry_after=0.5, details=[{"field": "x"}]
    )
    assert from_wire(codec, codec.encode(limited)) == {
        "type": "error",
        "id": 0,
        "code": "rate_limited",
        "message": "slow down",
        "retryAfter": 0.5,
        "details": [{"field": "x"}],
    }
    # A reply always carries data, even null.
    assert from_wire(codec, codec.encode(f.Reply(id="a", data=None))) == {
        "type": "reply",
        "id": "a",
        "data": None,
    }
    event = f.EventFrame(seq=3, event="message.created", data={"clientMsgId": "c"})
    assert from_wire(codec, codec.encode(event)) == {
        "type": "event",
        "seq": 3,
        "event": "message.created",
        "data": {"clientMsgId": "c"},
    }
    signal = f.Signal(signal="typing", data={"memoryId": MEMORY})
    assert from_wire(codec, codec.encode(signal)) == {
        "type": "signal",
        "signal": "typing",
        "data": {"memoryId": MEMORY},
    }


@pytest.mark.parametrize("codec", CODECS)
def test_server_frames_round_trip_through_the_client_decoder(codec: Codec) -> None:
    decoder: Any = (msgspec.json if codec is JSON else msgspec.msgpack).Decoder(f.ServerFrame)
    frames: list[f.ServerFrame] = [
        f.Welcome(
            user_id=uuid.uuid4(),
            device_id=uuid.uuid4(),
            session_id=uuid.uuid4(),
            head_seq=0,
            heartbeat=1.5,
            limits=LIMITS,
            resync=True,
        ),
        f.Reply(id=5, data={"pong": True}),
        f.Error(code="not_found", message="gone", id="q"),
        f.EventFrame(seq=1, event="memory.created", data={"id": MEMORY}),
        f.Signal(signal="presence", data={"online": False}),
    ]
    for frame in frames:
        assert decoder.decode(codec.encode(frame)) == frame


def test_codec_for_a_subprotocol() -> None:
    assert codec_for(SUBPROTOCOL_MSGPACK) is MSGPACK
    assert codec_for(SUBPROTOCOL_JSON) is JSON
    assert codec_for(None) is JSON  # no subprotocol offered means JSON
    assert codec_for("memoryd.v2.cbor") is JSON
    assert (MSGPACK.binary, JSON.binary) == (True, False)
