"""The original names of a message's files are searched as part of the message: however
the file was attached (a send over REST or the socket, a voice upload with memoryId,
WhatsApp media stored on its message), typos included, gone with the file, and never
another user's."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from memoryd.client import connect
from memoryd.storage.database import Database
from memoryd.storage.files import FileStore, NewUpload
from tests.conftest import RunningServer
from tests.files.conftest import PDF_HEAD, upload
from tests.helpers import Api
from tests.search.conftest import plain, search

pytestmark = pytest.mark.storage


def _ws(server: RunningServer) -> str:
    return server.url.replace("http", "ws", 1) + "/ws"


async def _memory(user: Api, title: str = "paperwork") -> str:
    resp = await user.post("/api/memories", json={"title": title})
    assert resp.status == 201, resp.body
    return resp.body["memory"]["id"]  # type: ignore[no-any-return]


async def _file(user: Api, name: str) -> dict[str, Any]:
    resp = await upload(user, PDF_HEAD + b"total due: 42", name)
    assert resp.status == 201, resp.body
    assert resp.body["file"]["originalFilename"] == name
    return resp.body["file"]  # type: ignore[no-any-return]


async def _send(user: Api, memory_id: str, content: str, *files: dict[str, Any]) -> Any:
    body = {"content": content, "messageType": "document", "attachments": [f["id"] for f in files]}
    resp = await user.post(f"/api/memories/{memory_id}/messages", json=body)
    assert resp.status == 201, resp.body
    return resp.body["message"]


def _matches(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(message id, snippet) of every matching message, best memory first."""
    return [(m["id"], m["snippet"]) for r in body["results"] for m in r["messages"]]


async def test_a_word_of_a_file_name_finds_the_message_with_a_snippet(api: Api) -> None:
    user = await api.register()
    word = f"invoice{uuid.uuid4().hex[:6]}"
    memory = await _memory(user)
    sent = await _send(user, memory, "scanned copy", await _file(user, f"{word}-march.pdf"))
    await _send(user, memory, "nothing attached to this one")
    [(found, snippet)] = _matches(await search(user, word, mode="text"))
    assert found == sent["id"]
    assert f"<mark>{word}</mark>-march.pdf" in snippet
    assert plain(snippet) == f"scanned copy {word}-march.pdf"
    # Another word of the name, and the whole name as it was uploaded.
    assert [m for m, _ in _matches(await search(user, "march", mode="text"))] == [sent["id"]]
    whole = _matches(await search(user, f"{word}-march.pdf", mode="text"))
    assert [m for m, _ in whole] == [sent["id"]]
    # What the message says is still searched as before.
    [(_, said)] = _matches(await search(user, "scanned", mode="text"))
    assert "<mark>scanned</mark> copy" in said


async def test_a_typo_in_a_file_name_is_corrected(api: Api) -> None:
    user = await api.register()
    memory = await _memory(user)
    ledger = await _file(user, "quarterly-ledger.pdf")
    sent = await _send(user, memory, "for the accountant", ledger)
    [(found, snippet)] = _matches(await search(user, "quartrly", mode="text"))
    assert found == sent["id"]
    assert "<mark>quarterly</mark>" in snippet
    listed = await user.get("/api/memories", params={"search": "ledgr"})
    assert [m["id"] for m in listed.body["memories"]] == [memory]


async def test_socket_send_and_socket_search(server: RunningServer, api: Api) -> None:
    user = await api.register()
    name = f"boarding{uuid.uuid4().hex[:6]}"
    pdf = await _file(user, f"{name}_pass_LIS.pdf")
    assert user.token is not None
    async with connect(_ws(server), user.token) as device:
        memory = await device.request("memory.create", title="trip")
        sent = await device.request(
            "message.send", memory_id=memory["id"], client_msg_id="bp-1", content="flight",
            message_type="document", attachments=[pdf["id"]],
        )  # fmt: skip
        data = await device.request("search", q=name, mode="text", limit=5)
        [result] = data["results"]
        [match] = result["messages"]
        assert match["id"] == sent["id"]
        assert f"<mark>{name}</mark>" in match["snippet"]
        typo = await device.request("search", q=name[:-1] + "x", mode="text", limit=5)
        assert [m["id"] for r in typo["results"] for m in r["messages"]] == [sent["id"]]
    rest = await search(user, name, mode="text")
    assert [r["messages"][0]["snippet"] for r in rest["results"]] == [match["snippet"]]


async def test_a_voice_upload_with_memory_id_is_found_by_its_name(api: Api) -> None:
    user = await api.register()
    memory = await _memory(user, "voice notes")
    name = f"standup{uuid.uuid4().hex[:6]}"
    clip = b"OggS\x00\x02" + b"\x00" * 100  # the transcription fails: the name still counts
    voice = await upload(
        user, clip, f"{name}.ogg", field="audio", path="/api/voice/upload",
        fields={"memoryId": memory}, before=False,
    )  # fmt: skip
    assert voice.status == 201, voice.body
    [(found, snippet)] = _matches(await search(user, name, mode="text"))
    assert found == voice.body["messageId"]
    assert plain(snippet).startswith(name) and f"<mark>{name}</mark>" in snippet


async def test_whatsapp_media_stored_on_its_message_is_found(api: Api, db: Database) -> None:
    user = await api.register()
    user_id = uuid.UUID(user.user["id"])  # type: ignore[attr-defined]
    memory = await _memory(user, "WhatsApp: Ana")
    placeholder = await _send(user, memory, "[document]")
    name = f"lease{uuid.uuid4().hex[:6]}"
    file_id = uuid.uuid4()
    new = NewUpload(
        id=file_id, user_id=user_id, filename=f"{file_id}.pdf",
        original_filename=f"{name} signed.pdf", file_type="application/pdf", file_size=10,
        kind="document", sha256="0" * 64, storage_path=f"test/{file_id}",
        storage_provider="local", memory_id=uuid.UUID(memory),
    )  # fmt: skip
    # What `handlers.files.store_media` calls for a WhatsApp message's media.
    _, event, created = await FileStore(db).add_media(
        new, message_id=uuid.UUID(placeholder["id"]), message_metadata={"mediaStatus": "stored"}
    )
    assert created and event is not None
    [(found, snippet)] = _matches(await search(user, name, mode="text"))
    assert found == placeholder["id"]
    assert f"<mark>{name}</mark> signed.pdf" in snippet
    assert _matches(await search(user, "signd", mode="text"))[0][0] == placeholder["id"]


async def test_a_deleted_file_stops_matching(api: Api, db: Database) -> None:
    user = await api.register()
    memory = await _memory(user)
    word = f"receipt{uuid.uuid4().hex[:6]}"
    pdf = await _file(user, f"{word}.pdf")
    other = await _file(user, "warranty.pdf")
    sent = await _send(user, memory, "two papers", pdf, other)
    assert _matches(await search(user, word, mode="text"))
    # Not through the API (an attached file goes with its message), but however a files
    # row goes, its name leaves the message's document.
    await db.execute("DELETE FROM files WHERE id = $1", uuid.UUID(pdf["id"]))
    assert (await search(user, word, mode="text"))["results"] == []
    # The typo's correction may still name the word (the vocabulary keeps words), but no
    # message matches it any more.
    assert (await search(user, word[:-1] + "q", mode="text"))["results"] == []
    [(found, _)] = _matches(await search(user, "warranty", mode="text"))
    assert found == sent["id"]
    assert [m for m, _ in _matches(await search(user, "papers", mode="text"))] == [sent["id"]]


async def test_deleting_a_message_or_memory_with_files_still_works(premium: Api) -> None:
    user = premium
    memory = await _memory(user)
    word = f"contract{uuid.uuid4().hex[:6]}"
    sent = await _send(user, memory, "signed", await _file(user, f"{word}-a.pdf"))
    await _send(user, memory, "also", await _file(user, f"{word}-b.pdf"))
    assert len(_matches(await search(user, word, mode="text"))) == 2
    path = f"/api/memories/{memory}/messages/{sent['id']}"
    assert (await user.delete(path)).status == 204
    assert len(_matches(await search(user, word, mode="text"))) == 1
    assert (await user.delete(f"/api/memories/{memory}")).status == 204
    assert (await search(user, word, mode="text"))["results"] == []


async def test_another_users_file_names_never_match(api: Api) -> None:
    secret = f"payslip{uuid.uuid4().hex[:6]}"
    owner, other = await api.register(), await api.register()
    memory = await _memory(owner)
    await _send(owner, memory, "for the bank", await _file(owner, f"{secret}-june.pdf"))
    await _file(owner, f"{secret}-july.pdf")  # uploaded, never attached
    assert (await search(owner, secret, mode="text"))["results"]
    for q in (secret, secret[:-1] + "x", secret[:8], f"{secret}-june.pdf", "june"):
        assert (await search(other, q, mode="text"))["results"] == [], q
        listed = await other.get("/api/memories", params={"search": q})
        assert listed.body["memories"] == [], q
    # An unattached file is in no message: its name alone matches nothing.
    assert _matches(await search(owner, "july", mode="text")) == []


async def test_concurrent_sends_of_one_user_with_files_all_succeed(api: Api) -> None:
    # Names' words join the vocabulary at upload, so a send adds new words in one
    # statement (its content's, in order) and concurrent sends never wait in a cycle.
    user = await api.register()
    tag = uuid.uuid4().hex[:6]
    words = [f"w{tag}{i}" for i in range(8)]
    memories = [await _memory(user, f"thread {i}") for i in range(4)]
    files = [await _file(user, f"{words[i]}-{words[7 - i]}.pdf") for i in range(8)]

    async def send(i: int) -> Any:
        content = " ".join([f"c{tag}{(i + k) % 8}" for k in range(4)][:: 1 if i % 2 else -1])
        return await _send(user, memories[i % 4], content, files[i])

    sent = await asyncio.gather(*(send(i) for i in range(8)))
    for i, word in enumerate(words):
        # Quoted: exact matches only (the other words are typos of each other).
        found = [m for m, _ in _matches(await search(user, f'"{word}"', mode="text"))]
        assert sorted(found) == sorted([sent[i]["id"], sent[7 - i]["id"]]), word


async def test_an_edit_of_the_content_keeps_the_file_names(premium: Api) -> None:
    user = premium
    memory = await _memory(user)
    word = f"deed{uuid.uuid4().hex[:6]}"
    sent = await _send(user, memory, "the pelicans", await _file(user, f"{word}.pdf"))
    path = f"/api/memories/{memory}/messages/{sent['id']}"
    assert (await user.patch(path, json={"content": "the flamingos"})).status == 200
    assert (await search(user, "pelicans", mode="text"))["results"] == []
    [(found, snippet)] = _matches(await search(user, word, mode="text"))
    assert found == sent["id"]
    assert plain(snippet) == f"the flamingos {word}.pdf"
