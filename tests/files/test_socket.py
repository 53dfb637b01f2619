"""Files over the socket: message.send with attachments (the same rules as REST, an error
frame naming `attachments`), message.created carrying the files' metadata, and a voice
note's transcript arriving as message.updated."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memoryd.client import Client, ClientEvent, RequestError, connect
from tests.conftest import RunningServer
from tests.files.conftest import speak, upload
from tests.helpers import Api

pytestmark = pytest.mark.storage


async def _next(device: Client, name: str, timeout: float = 90.0) -> ClientEvent:
    deadline = time.monotonic() + timeout
    while True:
        event = await device.next_event(timeout=max(0.01, deadline - time.monotonic()))
        if event.event == name:
            return event


async def test_socket_sends_check_attachments_and_events_carry_files(
    server: RunningServer, api: Api, tmp_path: Path
) -> None:
    me, other = await api.register(), await api.register()
    theirs = (await upload(other, b"theirs", "t.txt")).body["file"]
    mine = (await upload(me, b"mine", "m.txt")).body["file"]
    url = server.url.replace("http://", "ws://") + "/ws"
    assert me.token is not None
    async with connect(url, me.token) as device:
        memory = await device.request("memory.create", title="socket files")
        with pytest.raises(RequestError) as refused:
            await device.request(
                "message.send", memory_id=memory["id"], client_msg_id="f-1", content="x",
                attachments=[mine["id"], theirs["id"]],
            )  # fmt: skip
        assert refused.value.code == "validation_failed"
        assert [d["field"] for d in refused.value.details] == ["attachments[1]"]

        sent = await device.request(
            "message.send", memory_id=memory["id"], client_msg_id="f-2", content="x",
            message_type="document", attachments=[mine["id"]],
        )  # fmt: skip
        assert [f["id"] for f in sent["files"]] == [mine["id"]]
        created = await _next(device, "message.created")
        assert created.data["files"] == sent["files"]
        assert created.data["files"][0]["fileType"] == "text/plain; charset=utf-8"

        audio = speak("one two three four five", tmp_path / "socket")
        voice = await upload(
            me, audio, "n.ogg", field="audio", path="/api/voice/upload",
            fields={"memoryId": memory["id"]},
        )  # fmt: skip
        assert voice.status == 201, voice.body
        note = await _next(device, "message.created")
        assert note.data["messageType"] == "voice" and note.data["content"] == ""
        assert note.data["files"][0]["kind"] == "audio"
        updated = await _next(device, "message.updated")
        assert updated.data["id"] == voice.body["messageId"]
        assert "three" in updated.data["content"].split()
        assert updated.data["metadata"]["transcription"]["status"] == "completed"
        assert updated.data["files"][0]["id"] == voice.body["fileId"]
