"""Python client SDK for memoryd's WebSocket protocol v1 (on the ``websockets`` library).

    async with memoryd.client.connect("ws://127.0.0.1:8080/ws", token) as c:
        memory = await c.request("memory.create", title="Trip")
        await c.request("message.send", memory_id=memory["id"], client_msg_id="m1", content="hi")
        async for event in c.events():
            print(event.seq, event.event, event.data)

Requests are futures matched by ``id``; events are de-duplicated by ``seq`` and acknowledged
automatically once handed to the caller; a lost connection is re-established with
exponential backoff and full jitter and resumes from the last seq received, so the
caller sees every event exactly once and in order. A request in flight when the
connection drops fails with `Disconnected`; resending it with the same ``clientMsgId``
is safe. ``Client(..., wait_rate_limited=True)`` waits out a ``rate_limited`` answer
(its ``retryAfter``) and sends the request again, within the request's timeout.
"""

from memoryd.client.session import (
    Client,
    ClientEvent,
    ClientSignal,
    Disconnected,
    HandshakeError,
    RequestError,
    connect,
)

__all__ = [
    "Client",
    "ClientEvent",
    "ClientSignal",
    "Disconnected",
    "HandshakeError",
    "RequestError",
    "connect",
]
