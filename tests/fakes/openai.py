"""A fake OpenAI-compatible server on a random local port.

It speaks the wire format of OpenAI's API reference:

- ``POST /v1/chat/completions``: a ``chat.completion`` object, or with ``stream: true``
  server-sent events of ``chat.completion.chunk`` objects (a first chunk with the role,
  one per piece of content, one with ``finish_reason``, then, when
  ``stream_options.include_usage`` is set, a last chunk with empty ``choices`` and the
  ``usage``; every earlier chunk then has ``"usage": null``), ended by ``data: [DONE]``.
  ``logprobs: true`` adds token log-probabilities to a JSON answer.
- ``POST /v1/embeddings``: a ``list`` of ``embedding`` objects with ``usage``, of
  ``dimensions`` floats (default 64), base64 float32s with ``encoding_format: base64``.
- ``POST /v1/audio/transcriptions``: a ``multipart/form-data`` request (``file`` with a
  filename, ``model``, ``response_format``, optional ``language``, ``prompt``,
  ``temperature``, ``timestamp_granularities[]``). ``verbose_json`` answers
  ``{task, language, duration, text, segments: [{id, seek, start, end, text, tokens,
  temperature, avg_logprob, compression_ratio, no_speech_prob}], usage}`` (``language``
  is a name such as ``english``); ``json`` answers ``{text, usage}``. The transcript is
  ``transcript``; files over 25 MiB get OpenAI's 413.
- Errors as OpenAI sends them: ``{"error": {"message", "type", "param", "code"}}``.

A test queues behaviours (`Step`) that the next requests consume in order: a 429 with
``Retry-After``, a 500, a slow stream, a stream cut off mid-way, or a stream that holds
after some chunks until the test releases it. Without a queued step it answers ``answer``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes import base_url, serve_on_loopback


@dataclass
class Step:
    """How to answer one request."""

    status: int = 200  # 429 or 5xx: an error answer
    retry_after: str | None = None  # the Retry-After header of an error
    text: str | None = None  # the answer (default: FakeOpenAI.answer)
    chunk_delay: float = 0.0  # seconds before each streamed chunk
    cut_after: int | None = None  # drop the connection after this many content chunks
    hold_after: int | None = None  # wait for `release` after this many content chunks
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


class FakeOpenAI:
    def __init__(self, answer: str = "Memo here: the bakery was in Belém.") -> None:
        self.answer = answer
        self.transcript = "Remember to buy milk and bread tomorrow morning."
        self.uploads: list[dict[str, Any]] = []  # transcription requests: fields, file size
        self.model = "fake-gpt"
        self.steps: deque[Step] = deque()
        self.requests: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- control --------------------------------------------------------------------------

    def then(self, *steps: Step) -> None:
        self.steps.extend(steps)

    def chats(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self._runner = await serve_on_loopback(app, handler_cancellation=True)
        self.url = base_url(self._runner)
        return self

    async def stop(self) -> None:
        for step in self.steps:
            step.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- endpoints ------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append(Seen(request.path, body, dict(request.headers), time.monotonic()))
        return body  # type: ignore[no-any-return]

    def _next(self) -> Step:
        return self.steps.popleft() if self.steps else Step()

    @staticmethod
    def _error(step: Step) -> web.Response:
        kind = "rate_limit_error" if step.status == 429 else "server_error"
        body = {
            "error": {
                "message": f"fake {step.status}",
                "type": kind,
                "param": None,
                "code": "rate_limit_exceeded" if step.status == 429 else None,
            }
        }
        headers = {"Retry-After": step.retry_after} if step.retry_after else None
        return web.json_response(body, status=step.status, headers=headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        step = self._next()
        if step.status != 200:
            return self._error(step)
        text = step.text if step.text is not None else self.answer
        prompt_tokens = sum(len(m.get("content") or "") for m in body["messages"]) // 4 + 1
        pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        created = int(time.time())
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [
                    {"token": p, "logprob": math.log(0.9), "bytes": list(p.encode()),
                     "top_logprobs": []} for p in pieces]}  # fmt: skip
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created,
                "model": self.model, "choices": [choice], "usage": usage,
            })  # fmt: skip
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}],
            }  # fmt: skip
            if with_usage:
                chunk["usage"] = None
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for n, piece in enumerate(pieces):
            if step.cut_after is not None and n == step.cut_after:
                assert request.transport is not None
                request.transport.close()  # no terminating chunk: the body is incomplete
                return response
            if step.hold_after is not None and n == step.hold_after:
                await step.release.wait()
            if step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            await send({"content": piece})
        await send({}, "stop")
        if with_usage:
            last = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": self.model, "choices": [], "usage": usage}  # fmt: skip
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/form-data"):
            return _invalid("Expected multipart/form-data", None)
        fields: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            if part.name == "file":
                fields["file"] = {"filename": part.filename, "size": len(data),
                                  "head": bytes(data[:4])}  # fmt: skip
            else:
                fields.setdefault(part.name or "", data.decode())
        self.uploads.append(fields)
        self.requests.append(Seen(request.path, fields, dict(request.headers), time.monotonic()))
        step = self._next()
        if step.status != 200:
            return self._error(step)
        if "file" not in fields or not fields["file"]["filename"]:
            return _invalid("Missing file or filename", "file")
        if "model" not in fields:
            return _invalid("you must provide a model parameter", "model")
        if fields["file"]["size"] > 25 * 1024 * 1024:
            return web.json_response({"error": {"message": "Maximum content size limit "
                "(26214400) exceeded", "type": "server_error", "param": None,
                "code": None}}, status=413)  # fmt: skip
        text = step.text if step.text is not None else self.transcript
        usage = {"type": "duration", "seconds": 3}
        if fields.get("response_format") != "verbose_json":
            return web.json_response({"text": text, "usage": usage})
        words = text.split()
        halves = [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :])]
        segments = [
            {"id": i, "seek": 0, "start": 1.5 * i, "end": 1.5 * (i + 1), "text": f" {half}",
             "tokens": [50364 + i], "temperature": 0.0, "avg_logprob": -0.105 * (i + 1),
             "compression_ratio": 1.1, "no_speech_prob": 0.01}
            for i, half in enumerate(halves)
        ]  # fmt: skip
        language = {"en": "english", "de": "german"}.get(fields.get("language", "en"), "english")
        return web.json_response({"task": "transcribe", "language": language,
                                  "duration": 3.0, "text": text, "segments": segments,
                                  "usage": usage})  # fmt: skip

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        step = self._next()
        if step.status != 200:
            return self._error(step)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 64)  # text-embedding-3 models honour `dimensions`
        as_base64 = body.get("encoding_format") == "base64"  # the SDK's default
        data = [
            {"object": "embedding", "index": i,
             "embedding": _base64(_embed(text, dims)) if as_base64 else _embed(text, dims)}
            for i, text in enumerate(inputs)
        ]  # fmt: skip
        tokens = sum(len(t.split()) for t in inputs)
        return web.json_response({
            "object": "list", "data": data, "model": "fake-embedding",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })  # fmt: skip


def _invalid(message: str, param: str | None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return web.json_response({"error": error}, status=400)


def _base64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embed(text: str, dims: int = 64) -> list[float]:
    """A deterministic unit vector: hashed lower-case words (texts sharing words align)."""
    vector = [0.0] * dims
    for word in text.lower().split():
        word = word.strip(".,!?;:\"'()")
        if len(word) > 2:
            digest = hashlib.sha256(word.encode()).digest()
            vector[digest[0] % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
