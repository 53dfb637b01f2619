"""Resume: a device that missed ``N`` events reconnects; how fast does it get them back?

A device connects, sends one real ``message.send`` (so the replayed events carry a real
message), notes its ``lastSeq`` and disconnects. ``N`` more ``message.created`` events
are then appended to the user's log with one SQL statement on memoryd's storage layer
connection (the rows ``append_event`` would write, with gap-free seqs and the head moved in
the same transaction). The device reconnects with ``hello{deviceId, lastSeq}``; the clock
runs from the connect until the last event has arrived. Once per codec.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from loadtests.bench.common import Account, CpuClock, ServerProcess
from loadtests.bench.wsclient import MemorydDevice, Recorder
from memoryd.storage.database import Database

_BULK = """
WITH head AS (
    UPDATE user_event_heads SET head_seq = head_seq + $3 WHERE user_id = $1
    RETURNING head_seq - $3 AS before)
INSERT INTO user_events (user_id, seq, type, payload)
SELECT $1, head.before + g, 'message.created', e.payload
FROM head, generate_series(1, $3) AS g,
     (SELECT payload FROM user_events WHERE user_id = $1 AND seq = $2) AS e
"""


async def append_events(dsn: str, user_id: uuid.UUID, template_seq: int, count: int) -> float:
    db = await Database.connect(dsn, min_size=1, max_size=1)
    try:
        t0 = time.perf_counter()
        async with db.transaction() as conn:
            await conn.execute(_BULK, user_id, template_seq, count)
        return time.perf_counter() - t0
    finally:
        await db.close()


async def run(
    server: ServerProcess,
    dsn: str,
    account: Account,
    *,
    events: int,
    codecs: tuple[str, ...] = ("json", "msgpack"),
    log: Any = print,
) -> dict[str, Any]:
    rec = Recorder()
    first = MemorydDevice(server.ws_url, rec, account.token)
    await first.connect()
    memory = await first.request({"type": "memory.create", "title": "resume"})
    sent = await first.request(
        {
            "type": "message.send",
            "memoryId": memory["id"],
            "clientMsgId": "r-1",
            "content": "Where was that bakery? " * 4,
            "messageType": "text",
        }
    )
    while (first.last_seq or 0) < 2:  # noqa: ASYNC110 - memory.created, message.created
        await asyncio.sleep(0.01)
    last_seq = first.last_seq or 0
    device_id = first.device_id
    await first.close()
    insert_s = await append_events(dsn, account.user_id, last_seq, events)
    target = last_seq + events
    log(f"  resume: appended {events} events in {insert_s:.2f} s (message {sent['id']})")
    results = []
    for codec in codecs:
        done = asyncio.Event()

        def on_event(
            _device: MemorydDevice, seq: int, _frame: Any, done: asyncio.Event = done
        ) -> None:
            if seq >= target:
                done.set()

        device = MemorydDevice(
            server.ws_url, rec, account.token, codec=codec, device_id=device_id,
            last_seq=last_seq, on_event=on_event,
        )  # fmt: skip
        clock = CpuClock(server.stats)
        t0 = time.perf_counter()
        await device.connect()
        t_welcome = time.perf_counter()
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - t0
        cpu = clock.read()
        await device.ack()
        await device.close()
        result = {
            "codec": codec,
            "events": device.events,
            "seconds": elapsed,
            "events_per_s": device.events / elapsed,
            "welcome_ms": (t_welcome - t0) * 1000,
            "server_cpu_util": cpu["server_cpu_util"],
            "client_cpu_util": cpu["client_cpu_util"],
            "server_cpu_us_per_event": cpu["server_cpu_s"] * 1e6 / max(1, device.events),
        }
        results.append(result)
        log(
            f"  resume {codec}: {device.events} events in {elapsed:.2f} s = "
            f"{result['events_per_s']:.0f}/s (server {100 * cpu['server_cpu_util']:.0f}%, "
            f"client {100 * cpu['client_cpu_util']:.0f}%)"
        )
    return {"missed_events": events, "insert_seconds": insert_s, "runs": results}
