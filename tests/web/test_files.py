"""Attachments and voice messages in the app, in chromium, on real servers.

Files go through the composer's attach button (the file chooser a person gets) and are
sent with the message; another device of the same user shows the image's thumbnail and
the text file's download link, both fetched with the session's token. A voice memo is
recorded with MediaRecorder from chromium's fake microphone, which plays a clip spoken by
espeak-ng (``--use-file-for-fake-audio-capture``); the local recognizer (pocketsphinx,
the default) transcribes it and the transcript replaces "Transcribing…".
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from memoryd.config import RateLimit
from tests.files.conftest import png, require_program
from tests.web.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PHONE,
    Devices,
    StartWeb,
    WebServer,
    open_devices,
    unavailable,
    wait_js,
)

NOTES = "Pack the charger.\nBook the tram tickets for Belém.\n".encode()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV clip for the fake microphone (chromium reads WAV and plays it in a loop)."""
    require_program("espeak-ng")
    require_program("ffmpeg")  # the server decodes the recording with it
    wav = tmp_path_factory.mktemp("speech") / "memo.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(wav), "one two three four five"],
        check=True,
    )
    return wav


@pytest_asyncio.fixture(scope="module")
async def mic_browser(speech: Path) -> AsyncIterator[Any]:
    """A chromium whose microphone is the clip, allowed without a prompt."""
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield browser
        await browser.close()


@pytest_asyncio.fixture
async def mic_devices(mic_browser: Any) -> AsyncIterator[Devices]:
    async with open_devices(mic_browser) as device:
        yield device


async def attach(page: Any, *files: dict[str, Any], keyboard: bool = False) -> None:
    """Pick files with the attach button, as a person does (the browser's file chooser),
    with the mouse or the keyboard."""
    button = page.get_by_role("button", name="Attach a file")
    async with page.expect_file_chooser() as chooser:
        await (button.press("Enter") if keyboard else button.click())
    await (await chooser.value).set_files(list(files))


async def test_files_and_a_voice_memo_reach_the_other_device(
    mic_devices: Devices, web_server: WebServer
) -> None:
    user = await web_server.user()
    made = await user.post("/api/memories", json={"title": "Packing for Lisbon"})
    memory_id = made.body["memory"]["id"]
    one = await mic_devices(permissions=["microphone"])
    await one.sign_in(web_server, user)
    await one.open_memory("Packing for Lisbon")
    two = await mic_devices()
    await two.sign_in(web_server, user)
    await two.open_memory("Packing for Lisbon")

    # Two files: each uploads at once and says so; then one send carries both.
    page = one.page
    await attach(
        page,
        {"name": "tram.png", "mimeType": "image/png", "buffer": png(640, 480, "teal")},
        {"name": "list.txt", "mimeType": "text/plain", "buffer": NOTES},
    )
    done = page.locator("#uploads li[data-state=done]")
    await done.filter(has_text="tram.png").wait_for()
    await done.filter(has_text="list.txt").wait_for()
    await one.send("What to take")
    mine = one.stored("What to take")
    await mine.wait_for()
    assert await page.locator("#uploads li").count() == 0  # the tray empties with the send
    stored = await user.get(f"/api/memories/{memory_id}/messages")
    [message] = stored.body["messages"]
    assert message["messageType"] == "document"
    assert [f["originalFilename"] for f in message["files"]] == ["tram.png", "list.txt"]

    # The other device: the thumbnail (a blob fetched with the token) and the file's name.
    theirs = two.stored("What to take")
    await theirs.locator("figure.image figcaption", has_text="tram.png").wait_for()
    thumb = "document.querySelector('#messages li[data-seq] img.thumb')"
    assert await wait_js(two.page, f"{thumb}?.complete && {thumb}.naturalWidth > 0")
    assert (await theirs.locator("img.thumb").get_attribute("src") or "").startswith("blob:")
    assert await theirs.get_by_role("img", name="tram.png").is_visible()
    link = theirs.get_by_role("link", name="list.txt")
    async with two.page.expect_download() as downloading:
        await link.click()
    download = await downloading.value
    assert download.suggested_filename == "list.txt"
    assert await asyncio.to_thread(Path(await download.path()).read_bytes) == NOTES

    # A voice memo: recorded, uploaded with the memory's id; the server makes the message.
    await two.page.evaluate(
        """() => {
          window.transcripts = [];
          new MutationObserver(() => {
            const el = document.querySelector('#messages li[data-type=voice] .transcript');
            const text = el && el.textContent;
            if (text && window.transcripts.at(-1) !== text) window.transcripts.push(text);
          }).observe(document.getElementById('messages'), {childList: true, subtree: true});
        }"""
    )
    await page.get_by_role("button", name="Record a voice message").click()
    await page.locator("#uploads li", has_text="Recording…").wait_for()
    await asyncio.sleep(3)
    await page.get_by_role("button", name="Stop recording and send").click()
    voice = "#messages li[data-seq][data-type=voice]"
    for device in (one, two):
        note = device.page.locator(voice)
        await note.get_by_label("Voice message").wait_for()  # the audio player
        done_text = note.locator(".transcript[data-state=completed]")
        await done_text.wait_for(timeout=90_000)
    transcript = await two.page.locator(f"{voice} .transcript").inner_text()
    seen = await two.page.evaluate("window.transcripts")
    assert seen[0] == "Transcribing…", seen
    listed = await user.get(f"/api/memories/{memory_id}/messages")
    [stored_voice] = [m for m in listed.body["messages"] if m["messageType"] == "voice"]
    words = stored_voice["metadata"]["transcription"]["text"]
    assert words and transcript == words  # what the recognizer heard, shown as is
    # WebM (Opus) from chromium: a WebM with only an audio track is stored as audio.
    assert stored_voice["files"][0]["fileType"] in ("audio/webm", "audio/ogg")
    player = f"document.querySelector('{voice} audio')"
    assert await wait_js(two.page, f"{player}.src.startsWith('blob:') && {player}.readyState >= 1")
    label = await two.page.locator(f"{voice} .file-label").inner_text()
    assert label.startswith("Voice message · 0:0"), label  # its length, a few seconds
    await two.screenshot("attachments-desktop")
    await two.page.set_viewport_size(PHONE)
    await two.page.locator(f"{voice} .transcript").scroll_into_view_if_needed()
    await two.screenshot("attachments-phone")

    # Pasted into the message box, and dropped on the thread: sent without words, the
    # message is its files (their names are its content, not shown twice).
    await page.evaluate(
        """() => {
          const data = (name) => {
            const dt = new DataTransfer();
            dt.items.add(new File([`${name} contents`], name, {type: 'text/plain'}));
            return dt;
          };
          const box = document.getElementById('message-input');
          box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data('pasted.txt'),
                                                         bubbles: true, cancelable: true}));
          document.getElementById('messages').dispatchEvent(new DragEvent('drop',
              {dataTransfer: data('dropped.txt'), bubbles: true, cancelable: true}));
        }"""
    )
    await done.filter(has_text="pasted.txt").wait_for()
    await done.filter(has_text="dropped.txt").wait_for()
    await page.get_by_role("button", name="Send").click()
    both = two.page.locator("#messages li[data-seq]").filter(
        has=two.page.get_by_role("link", name="dropped.txt")
    )
    await both.get_by_role("link", name="pasted.txt").wait_for()
    assert await both.locator(".body").count() == 0

    # A file removed from the tray after its upload is deleted, not left in the quota.
    await attach(page, {"name": "spare.txt", "mimeType": "text/plain", "buffer": b"spare"})
    spare = done.filter(has_text="spare.txt")
    file_id = await spare.get_attribute("data-file-id")
    assert (await user.get(f"/api/files/{file_id}")).status == 200
    await page.get_by_role("button", name="Remove spare.txt").click()
    for _ in range(100):
        if (await user.get(f"/api/files/{file_id}")).status == 404:
            break
        await asyncio.sleep(0.05)
    assert (await user.get(f"/api/files/{file_id}")).status == 404


async def test_upload_errors_are_shown_in_words(devices: Devices, start_web: StartWeb) -> None:
    server = await start_web(
        files_max_document_bytes=1024,
        files_quota_bytes=1500,
        rate_limit_upload=RateLimit(5, 3600),
    )
    user = await server.user()
    await user.post("/api/memories", json={"title": "Limits"})
    one = await devices()
    await one.sign_in(server, user)
    await one.open_memory("Limits")
    page = one.page
    failed = page.locator("#uploads li[data-state=failed] [role=alert]")

    # A send while an upload is still on its way waits for it, saying so.
    release = asyncio.Event()

    async def held(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route("**/api/files", held)
    await attach(page, {"name": "slow.txt", "mimeType": "text/plain", "buffer": b"slow"})
    await page.locator("#uploads li[data-state=uploading]", has_text="slow.txt").wait_for()
    await one.send("Not yet")
    await page.get_by_role("status").filter(has_text="Wait for the uploads to finish").wait_for()
    assert await page.get_by_label("Message", exact=True).input_value() == "Not yet"
    release.set()
    await page.locator("#uploads li[data-state=done]", has_text="slow.txt").wait_for()
    await page.unroute("**/api/files")
    await page.get_by_role("button", name="Send").click()
    await one.stored("Not yet").get_by_role("link", name="slow.txt").wait_for()

    big = {"name": "big.txt", "mimeType": "text/plain", "buffer": b"a" * 4000}
    await attach(page, big, keyboard=True)
    await failed.filter(
        has_text="Not attached: the file is too large (document files may be up to 1.0 KB)."
    ).wait_for()
    await attach(
        page,
        {"name": "blob.bin", "mimeType": "application/octet-stream", "buffer": bytes(range(256))},
    )
    await failed.filter(has_text="Not attached: this type of file is not accepted").wait_for()
    # Remove the failed ones (by keyboard: the buttons are named), then fill the quota.
    for name in ("big.txt", "blob.bin"):
        await page.get_by_role("button", name=f"Remove {name}").press("Enter")
    assert await page.locator("#uploads li").count() == 0
    await attach(page, {"name": "a.txt", "mimeType": "text/plain", "buffer": b"x" * 1000})
    await page.locator("#uploads li[data-state=done]", has_text="a.txt").wait_for()
    await attach(page, {"name": "b.txt", "mimeType": "text/plain", "buffer": b"y" * 1000})
    await failed.filter(
        has_text="Not attached: your storage is full (1004 bytes of 1.5 KB used)"
    ).wait_for()
    # The sixth upload of the hour is one too many (the limit here is 5).
    await attach(page, {"name": "c.txt", "mimeType": "text/plain", "buffer": b"z" * 10})
    await failed.filter(has_text="Not attached: too many uploads for now (try again in").wait_for()

    # The send takes the uploaded file and leaves the failed ones out.
    await one.send("Only a.txt")
    sent = one.stored("Only a.txt")
    await sent.get_by_role("link", name="a.txt").wait_for()
    assert await sent.locator(".file").count() == 1
