"""Memo in a thread, against a fake OpenAI server: streaming to every device, one final
reply per question, cancel, failures, a node dying mid-reply, and the REST path."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from memoryd.client import connect
from memoryd.client.session import Client, ClientEvent, ClientSignal, RequestError
from memoryd.config import RateLimit
from memoryd.handlers.memo import reply as ai_reply
from memoryd.server.jobs import JobRunner
from memoryd.server.keys import JOBS
from memoryd.storage.ai import AI_REPLY
from memoryd.storage.jobs import Job
from tests.ai.conftest import Node, StartNode
from tests.fakes.openai import FakeOpenAI, Step
from tests.helpers import Api, promote

pytestmark = pytest.mark.storage


async def _memory(user: Api, **fields: Any) -> str:
    resp = await user.post("/api/memories", json={"title": "Lisbon", **fields})
    assert resp.status == 201, resp.body
    return str(resp.body["memory"]["id"])


async def _event(client: Client, name: str, timeout: float = 10, **match: Any) -> ClientEvent:
    """The next event called ``name`` whose data has ``match``; earlier ones are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event(timeout)
            if event.event == name and all(event.data.get(k) == v for k, v in match.items()):
                return event


async def _deltas(client: Client, count: int, timeout: float = 10) -> list[Any]:
    """The next ``count`` ``ai.delta`` signals' data."""
    found: list[Any] = []
    while len(found) < count:
        signal: ClientSignal = await client.next_signal(timeout)
        if signal.signal == "ai.delta":
            found.append(signal.data)
    return found


async def _received_deltas(client: Client) -> list[Any]:
    """Every ``ai.delta`` already received. Call it after the reply's event: the deltas
    were queued on the socket before it."""
    found: list[Any] = []
    while True:
        try:
            signal = await client.next_signal(0.02)
        except TimeoutError:
            return found
        if signal.signal == "ai.delta":
            found.append(signal.data)


async def _finished_job(node: Node, message_id: str, timeout: float = 5) -> Job:
    """The ``ai.reply`` job of a message once the runner has marked it finished (it does
    so just after the reply it stored was published, so a client can see the reply first)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await node.services.store.jobs.by_key(AI_REPLY, message_id)
            if job is not None and job.status in ("done", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.02)


async def _ai_messages(user: Api, memory_id: str) -> list[dict[str, Any]]:
    resp = await user.get(f"/api/memories/{memory_id}/messages", params={"sortOrder": "asc"})
    assert resp.status == 200, resp.body
    return [m for m in resp.body["messages"] if m["isAiGenerated"]]


async def test_a_reply_streams_to_every_device_then_lands_once(
    node: Node, fake: FakeOpenAI
) -> None:
    user = await node.premium()
    memory_id = await _memory(user, content={"text": "We ate pastéis de nata in Belém."})
    async with (
        connect(node.ws, user.token or "") as phone,
        connect(node.ws, user.token or "") as laptop,
    ):
        sent = await phone.request(
            "message.send", memory_id=memory_id, client_msg_id="q-1",
            content="Where was that bakery?", ai=True,
        )  # fmt: skip
        for device in (phone, laptop):
            question = await _event(device, "message.created", id=sent["id"])
            assert question.data["isAiGenerated"] is False
            reply = await _event(device, "message.created", parentId=sent["id"])
            deltas = await _received_deltas(device)
            assert [d["index"] for d in deltas] == list(range(len(deltas)))
            assert {d["replyTo"] for d in deltas} == {sent["id"]}
            assert {d["memoryId"] for d in deltas} == {memory_id}
            assert "".join(d["delta"] for d in deltas) == fake.answer
            assert reply.seq > question.seq
            data = reply.data
            assert data["isAiGenerated"] is True and data["status"] == "sent"
            assert data["content"] == fake.answer
            assert data["clientMsgId"] == f"memo:{sent['id']}"
            assert data["metadata"]["model"] == "fake-gpt"
            assert data["metadata"]["tokensUsed"] > 0

    [chat] = fake.chats()
    assert chat.body["stream"] is True
    assert chat.body["stream_options"] == {"include_usage": True}
    assert chat.body["model"] == node.services.settings.openai_chat_model
    assert chat.headers["Authorization"] == "Bearer test"
    system, *_, last = chat.body["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith(
        "You are Memo, a personal AI brain assistant. Help the user manage their memories "
        "intelligently. Context: "
    )
    assert "pastéis de nata" in system["content"]  # the memory itself is context
    assert last == {"role": "user", "content": "Where was that bakery?"}
    assert len(await _ai_messages(user, memory_id)) == 1

    rows = await node.services.store.ai.interactions(uuid.UUID(user.user["id"]))
    assert [(r["interaction_type"], r["status"], r["model_used"]) for r in rows] == [
        ("reply", "completed", "fake-gpt")
    ]
    assert rows[0]["tokens_used"] > 0
    metrics = await node.api.get("/metrics")
    assert 'ai_requests_total{model="fake-gpt",status="success"} 1.0' in metrics.body


async def test_the_thread_is_the_conversation(node: Node, fake: FakeOpenAI) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    path = f"/api/memories/{memory_id}/messages"
    first = await user.post(path, json={"content": "My sister's name is Ana.", "ai": True})
    assert first.status == 201 and first.body["aiResponse"]["status"] == "sent"
    await user.post(path, json={"content": "What is my sister's name?", "ai": True})
    second = fake.chats()[1].body["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "My sister's name is Ana."
    assert second[2]["content"] == fake.answer


async def test_cancel_stops_the_stream_and_stores_what_was_said(
    node: Node, fake: FakeOpenAI
) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    step = Step(hold_after=2)
    fake.then(step)
    async with connect(node.ws, user.token or "") as client:
        sent = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="c-1", content="Tell me", ai=True
        )
        deltas = await _deltas(client, 2)
        result = await client.request("ai.cancel", reply_to=sent["id"])
        assert result == {"cancelled": [sent["id"]]}
        reply = await _event(client, "message.created", parentId=sent["id"])
        assert reply.data["status"] == "cancelled"
        assert reply.data["content"] == "".join(d["delta"] for d in deltas).strip()
        assert reply.data["metadata"]["error"]["code"] == "cancelled"
        again = await client.request("ai.cancel", reply_to=sent["id"])
        assert again == {"cancelled": []}  # nothing in progress any more
    step.release.set()
    await asyncio.sleep(0.2)
    assert len(await _ai_messages(user, memory_id)) == 1
    job = await node.services.store.jobs.by_key(AI_REPLY, sent["id"])
    assert job is not None and job.status == "cancelled"


async def test_a_reply_waiting_for_its_turn_is_cancelled_too(start_node: StartNode) -> None:
    node = await start_node(ai_reply_wait=0.1)
    user = await node.premium()
    memory_id = await _memory(user)
    await node.app[JOBS].stop()  # nobody runs the job: it stays pending
    sent = await user.post(
        f"/api/memories/{memory_id}/messages", json={"content": "Later", "ai": True},
    )  # fmt: skip
    assert "aiResponse" not in sent.body  # MEMORYD_AI_REPLY_WAIT passed without a reply
    async with connect(node.ws, user.token or "") as client:
        result = await client.request("ai.cancel", memory_id=memory_id)
        assert result == {"cancelled": [sent.body["message"]["id"]]}
    [reply] = await _ai_messages(user, memory_id)
    assert reply["status"] == "cancelled" and reply["content"] == "Reply cancelled."


async def test_a_provider_failure_is_stored_as_a_failed_reply(node: Node, fake: FakeOpenAI) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    fake.then(Step(status=400))  # a request the server will never accept: no retry
    resp = await user.post(
        f"/api/memories/{memory_id}/messages", json={"content": "Hello?", "ai": True}
    )
    assert resp.status == 201, resp.body
    reply = resp.body["aiResponse"]
    assert reply["status"] == "failed" and reply["isAiGenerated"] is True
    assert reply["content"] == "Memo could not answer this time."
    assert reply["metadata"]["error"] == {
        "code": "ai_failed",
        "message": "the AI server answered HTTP 400",
    }
    job = await _finished_job(node, resp.body["message"]["id"])
    assert job.status == "done" and job.attempts == 1
    metrics = await node.api.get("/metrics")
    model = node.services.settings.openai_chat_model
    assert f'ai_requests_total{{model="{model}",status="error"}} 1.0' in metrics.body


async def test_429_and_500_are_retried_honouring_retry_after(node: Node, fake: FakeOpenAI) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    fake.then(Step(status=429, retry_after="0.3"), Step(status=503))
    resp = await user.post(
        f"/api/memories/{memory_id}/messages", json={"content": "Hi", "ai": True}
    )
    assert resp.body["aiResponse"]["status"] == "sent"
    first, second, third = fake.chats()
    assert second.at - first.at >= 0.3  # waited as the 429 asked
    assert third.at > second.at


async def test_a_stream_cut_off_mid_answer_is_retried_from_the_start(
    node: Node, fake: FakeOpenAI
) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    fake.then(Step(cut_after=2))
    async with connect(node.ws, user.token or "") as client:
        sent = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="x-1", content="Go", ai=True
        )
        reply = await _event(client, "message.created", parentId=sent["id"])
        deltas = await _received_deltas(client)
    assert reply.data["status"] == "sent" and reply.data["content"] == fake.answer
    starts = [i for i, d in enumerate(deltas) if d["index"] == 0]
    assert len(starts) == 2  # the retry streamed again from index 0
    assert "".join(d["delta"] for d in deltas[starts[1] :]) == fake.answer
    job = await node.services.store.jobs.by_key(AI_REPLY, sent["id"])
    assert job is not None and job.attempts == 2 and job.status == "done"


async def test_a_dead_nodes_reply_is_taken_over_and_stored_once(
    node: Node, fake: FakeOpenAI
) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    svc = node.services
    await node.app[JOBS].stop()  # the node's own runner waits until the "dead" node claimed
    doomed = JobRunner(svc.store.jobs, node="doomed", lease_seconds=1.0, poll_interval=0.05)
    doomed.register(AI_REPLY, ai_reply.job_handler(svc))
    fake.then(Step(hold_after=1))  # the doomed node's stream stalls after one chunk
    async with connect(node.ws, user.token or "") as client:
        sent = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="d-1", content="Hi", ai=True
        )
        doomed.start()
        [first] = await _deltas(client, 1)
        assert first["index"] == 0
        await doomed.stop()  # dies mid-reply: no reply stored, its lease runs out
        job = await svc.store.jobs.by_key(AI_REPLY, sent["id"])
        assert job is not None and job.status == "running" and job.leased_by == "doomed"
        node.app[JOBS].start()  # a live node takes the job over once the lease expires
        reply = await _event(client, "message.created", parentId=sent["id"], timeout=15)
    assert reply.data["status"] == "sent" and reply.data["content"] == fake.answer
    job = await _finished_job(node, sent["id"])  # marked done just after the reply is out
    assert job is not None and job.status == "done" and job.attempts == 2
    assert job.leased_by == node.app[JOBS].node
    # The job running once more (a late duplicate) can never store a second reply.
    again = await ai_reply.run_reply(svc, job)
    assert again == {"reply": reply.data["id"], "status": "sent"}
    assert len(await _ai_messages(user, memory_id)) == 1
    assert len(fake.chats()) == 2


async def test_rest_answers_with_the_reply_when_it_is_quick(node: Node, fake: FakeOpenAI) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    path = f"/api/memories/{memory_id}/messages"
    resp = await user.post(path, json={"content": "Quick one", "ai": True, "clientMsgId": "r1"})
    assert resp.status == 201, resp.body
    message, reply = resp.body["message"], resp.body["aiResponse"]
    assert reply["parentId"] == message["id"] and reply["isAiGenerated"] is True
    assert reply["content"] == fake.answer and reply["seq"] == message["seq"] + 1
    replayed = await user.post(path, json={"content": "Quick one", "ai": True, "clientMsgId": "r1"})
    assert replayed.header("Idempotent-Replayed") == "true"
    assert replayed.body == resp.body  # the same message and the same single reply
    assert len(fake.chats()) == 1

    plain = await node.api.register()
    denied = await plain.post(
        f"/api/memories/{await _memory(plain)}/messages", json={"content": "x", "ai": True}
    )
    assert denied.status == 403 and denied.body["error"]["details"] == {"permission": "access:ai"}
    without = await plain.get(f"/api/memories/{memory_id}/messages")
    assert without.status == 404  # and, of course, nothing of the other user is visible


async def test_rest_answers_without_the_reply_when_it_is_slow(
    start_node: StartNode, fake: FakeOpenAI
) -> None:
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", ai_reply_wait=0.2
    )
    user = await node.premium()
    memory_id = await _memory(user)
    fake.then(Step(chunk_delay=0.1))
    async with connect(node.ws, user.token or "") as client:
        resp = await user.post(
            f"/api/memories/{memory_id}/messages", json={"content": "Slow", "ai": True}
        )
        assert resp.status == 201 and set(resp.body) == {"message"}
        reply = await _event(client, "message.created", parentId=resp.body["message"]["id"])
    assert reply.data["content"] == fake.answer


async def test_a_thread_memo_answers_gets_replies_without_asking(
    node: Node, fake: FakeOpenAI
) -> None:
    user = await node.premium()
    memory_id = await _memory(user, metadata={"memoAnswers": True})
    async with connect(node.ws, user.token or "") as client:
        sent = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="m-1", content="Note this"
        )
        reply = await _event(client, "message.created", parentId=sent["id"])
    assert reply.data["isAiGenerated"] is True
    plain = await node.api.register()  # a user without access:ai gets no reply there
    other = await _memory(plain, metadata={"memoAnswers": True})
    resp = await plain.post(f"/api/memories/{other}/messages", json={"content": "Hi"})
    assert resp.status == 201
    await asyncio.sleep(0.3)
    assert await _ai_messages(plain, other) == []
    assert len(fake.chats()) == 1


async def test_ai_ask_with_and_without_a_question(node: Node, fake: FakeOpenAI) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    async with connect(node.ws, user.token or "") as client:
        with pytest.raises(RequestError) as empty:
            await client.request("ai.ask", memory_id=memory_id)
        assert empty.value.code == "validation_failed"
        asked = await client.request("ai.ask", memory_id=memory_id, content="What now?")
        assert asked["started"] is True and asked["message"]["content"] == "What now?"
        assert asked["replyTo"] == asked["message"]["id"]
        await _event(client, "message.created", parentId=asked["replyTo"])
        again = await client.request("ai.ask", memory_id=memory_id)  # about the thread
        assert again == {"replyTo": asked["replyTo"], "message": None, "started": False}
        note = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="n-1", content="A new note"
        )
        bare = await client.request("ai.ask", memory_id=memory_id)
        assert bare == {"replyTo": note["id"], "message": None, "started": True}
        await _event(client, "message.created", parentId=note["id"])
        with pytest.raises(RequestError) as missing:
            await client.request("ai.ask", memory_id=str(uuid.uuid4()), content="?")
        assert missing.value.code == "not_found"
    plain = await node.api.register()
    async with connect(node.ws, plain.token or "") as client:
        for frame in ({"content": "hi"}, {}):
            with pytest.raises(RequestError) as denied:
                await client.request("ai.ask", memory_id=memory_id, **frame)
            assert denied.value.code == "forbidden"
        with pytest.raises(RequestError) as denied:
            await client.request("ai.cancel", memory_id=memory_id)
        assert denied.value.code == "forbidden"


async def test_replies_in_progress_per_user_are_capped(
    start_node: StartNode, fake: FakeOpenAI
) -> None:
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", ai_max_concurrent=1
    )
    user = await node.premium()
    memory_id = await _memory(user)
    step = Step(hold_after=0)
    fake.then(step)
    async with connect(node.ws, user.token or "") as client:
        first = await client.request("ai.ask", memory_id=memory_id, content="One")
        with pytest.raises(RequestError) as capped:
            await client.request("ai.ask", memory_id=memory_id, content="Two")
        assert capped.value.code == "rate_limited" and capped.value.retry_after
        history = await client.request("message.history", memory_id=memory_id)
        assert [m["content"] for m in history["messages"]] == ["One"]  # "Two" not stored
        step.release.set()
        await _event(client, "message.created", parentId=first["replyTo"])
        await _finished_job(node, first["replyTo"])  # the reply's job has ended: a free slot
        await client.request("ai.ask", memory_id=memory_id, content="Two")  # room again


async def test_the_ai_rate_limit_covers_socket_asks(
    start_node: StartNode, fake: FakeOpenAI
) -> None:
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", rate_limit_ai=RateLimit(1, 60)
    )
    user = await node.premium()
    memory_id = await _memory(user)
    async with connect(node.ws, user.token or "") as client:
        await client.request("ai.ask", memory_id=memory_id, content="One")
        with pytest.raises(RequestError) as limited:
            await client.request("ai.ask", memory_id=memory_id, content="Two")
        assert limited.value.code == "rate_limited" and limited.value.retry_after


async def test_limits_never_cost_a_user_their_message(
    start_node: StartNode, fake: FakeOpenAI
) -> None:
    """A resend of a stored message costs no `ai` budget; in a thread Memo answers by
    itself, a message past the limit is stored and Memo sits it out."""
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", rate_limit_ai=RateLimit(1, 60)
    )
    user = await node.premium()
    memory_id = await _memory(user)
    async with connect(node.ws, user.token or "") as client:
        first = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="r-1", content="Hi", ai=True
        )
        again = await client.request(
            "message.send", memory_id=memory_id, client_msg_id="r-1", content="Hi", ai=True
        )
        assert again["id"] == first["id"]
        await _event(client, "message.created", parentId=first["id"])
        with pytest.raises(RequestError) as limited:  # asked for explicitly: refused
            await client.request(
                "message.send", memory_id=memory_id, client_msg_id="r-2", content="Hm", ai=True
            )
        assert limited.value.code == "rate_limited"

    auto = await _memory(user, metadata={"memoAnswers": True})
    resp = await user.post(f"/api/memories/{auto}/messages", json={"content": "Note this"})
    assert resp.status == 201, resp.body
    await asyncio.sleep(0.3)
    assert await _ai_messages(user, auto) == []
    assert len(fake.chats()) == 1


async def test_a_refused_send_spends_no_ai_token(start_node: StartNode, fake: FakeOpenAI) -> None:
    """The `ai` token is spent only in the path that really stores the message: a send
    refused by a later check (here an unknown parentId) leaves the budget whole."""
    node = await start_node(
        openai_base_url=fake.url + "/v1", openai_api_key="test", rate_limit_ai=RateLimit(1, 60)
    )
    user = await node.premium()
    memory_id = await _memory(user)
    path = f"/api/memories/{memory_id}/messages"
    for _ in range(3):
        refused = await user.post(
            path, json={"content": "Hi", "ai": True, "parentId": str(uuid.uuid4())}
        )
        assert refused.status == 400, refused.body
        assert refused.body["error"]["details"][0]["field"] == "parentId"
    ok = await user.post(path, json={"content": "Hi", "ai": True, "clientMsgId": "t-1"})
    assert ok.status == 201, ok.body
    for _ in range(3):  # a replay costs nothing either
        again = await user.post(path, json={"content": "Hi", "ai": True, "clientMsgId": "t-1"})
        assert again.status == 201 and again.header("Idempotent-Replayed") == "true"
        assert again.body["message"]["id"] == ok.body["message"]["id"]
    limited = await user.post(path, json={"content": "Two", "ai": True})
    assert limited.status == 429, limited.body


async def test_a_resend_replays_after_the_limits_or_the_role_changed(node: Node) -> None:
    """Replay first, then validate new work: a resend with a stored clientMsgId gets the
    stored message even when it would now be too long, or the caller lost `access:ai`."""
    user = await node.premium()
    memory_id = await _memory(user)
    path = f"/api/memories/{memory_id}/messages"
    body = {"content": "x" * 40, "ai": True, "clientMsgId": "long-1"}
    first = await user.post(path, json=body)
    assert first.status == 201, first.body
    services = node.services
    original = services.settings
    services.settings = original.replace(max_content_chars=10)
    try:
        again = await user.post(path, json=body)
        assert again.status == 201, again.body
        assert again.header("Idempotent-Replayed") == "true"
        assert again.body["message"]["id"] == first.body["message"]["id"]
        fresh = await user.post(path, json={**body, "clientMsgId": "long-2"})
        assert fresh.status == 400  # new work is still checked
    finally:
        services.settings = original
    demoted = await promote(user, node.db, "user")
    again = await demoted.post(path, json=body)
    assert again.status == 201, again.body
    assert again.body["message"]["id"] == first.body["message"]["id"]
    fresh = await demoted.post(path, json={**body, "clientMsgId": "ai-2"})
    assert fresh.status == 403, fresh.body


async def test_the_servers_own_client_msg_ids_are_reserved(node: Node) -> None:
    user = await node.premium()
    memory_id = await _memory(user)
    for taken in ("memo:" + str(uuid.uuid4()), "wa:wamid.HBgL"):
        resp = await user.post(
            f"/api/memories/{memory_id}/messages", json={"content": "x", "clientMsgId": taken}
        )
        assert resp.status == 400, resp.body
        assert resp.body["error"]["details"][0]["field"] == "clientMsgId"
    async with connect(node.ws, user.token or "") as client:
        with pytest.raises(RequestError) as refused:
            await client.request(
                "message.send", memory_id=memory_id, client_msg_id="memo:x", content="x"
            )
        assert refused.value.code == "validation_failed"
