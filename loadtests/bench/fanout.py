"""Fan-out: users with 3 devices each; one device per user sends, the others receive.

A *step* offers a fixed rate of sends for a while (open loop: sends go out on schedule
whatever the replies do), waits for the stragglers, and reports deliveries/s, the
send -> deliver latency percentiles on the *other* devices, the share delivered, and the
server's CPU per delivery (``/proc/<pid>/stat``; the load generator's own CPU is reported
too, so a client-bound step shows). A *ramp* repeats steps at rising rates until p99 goes
over 100 ms or less than 99 % is delivered.

Modes: ``typing`` (an ephemeral signal; memoryd and both peers) and ``message``
(a durable ``message.send``; memoryd only: the peers store nothing).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtests.bench.common import (
    MAX_RATE,
    MAX_SOCKETS,
    Account,
    CpuClock,
    ServerProcess,
    no_collector_pauses,
    percentiles,
)
from loadtests.bench.wsclient import (
    Device,
    MemorydDevice,
    Recorder,
    RelayDevice,
    SocketIODevice,
    close_all,
    connect_all,
)

P99_LIMIT_S = 0.100
DELIVERY_FLOOR = 0.99
CONTENT = "x" * 100  # a short chat message


@dataclass
class Population:
    kind: str
    server: ServerProcess
    recorder: Recorder
    users: list[list[Device]] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)  # memoryd: one memory per user

    @property
    def devices(self) -> list[Device]:
        return [d for user in self.users for d in user]

    @property
    def receivers_per_send(self) -> int:
        return len(self.users[0]) - 1


async def populate(
    kind: str,
    server: ServerProcess,
    n_users: int,
    *,
    per_user: int = 3,
    codec: str = "json",
    accounts: Sequence[Account] = (),
    recorder: Recorder | None = None,
    population: Population | None = None,
) -> Population:
    """Connect ``n_users`` x ``per_user`` sockets (or grow ``population`` to that size)."""
    if n_users * per_user > MAX_SOCKETS:
        raise ValueError(f"at most {MAX_SOCKETS} sockets")
    pop = population or Population(kind, server, recorder or Recorder())
    start = len(pop.users)
    new_users: list[list[Device]] = []
    for i in range(start, n_users):
        if kind == "memoryd":
            token = accounts[i].token
            devices: list[Device] = [
                MemorydDevice(server.ws_url, pop.recorder, token, codec=codec)
                for _ in range(per_user)
            ]
        else:
            user = uuid.uuid4().hex
            cls = RelayDevice if kind == "ws-relay" else SocketIODevice
            devices = [cls(server.ws_url, pop.recorder, user, f"d{j}") for j in range(per_user)]
        new_users.append(devices)
    await connect_all([d for u in new_users for d in u])
    pop.users.extend(new_users)
    return pop


async def create_memories(pop: Population) -> None:
    """memoryd ``message`` mode: one memory per user, created over the sender's socket."""
    sem = asyncio.Semaphore(32)

    async def one(device: Device) -> str:
        assert isinstance(device, MemorydDevice)
        async with sem:
            memory = await device.request({"type": "memory.create", "title": "bench"})
        return str(memory["id"])

    todo = pop.users[len(pop.memories) :]
    pop.memories.extend(await asyncio.gather(*(one(u[0]) for u in todo)))


ACK_EVERY_S = 0.5  # each device acknowledges what it received this often
ACK_SLICES = 10  # ... at its own phase: one slice of the devices every 50 ms


async def _ack_pump(pop: Population, stop: asyncio.Event) -> None:
    """Devices acknowledge what they received, like clients would: each every 0.5 s, at
    its own phase. Independent devices do not ack in step; 900 acks in one burst every
    0.5 s would be a load pattern no population of real clients makes."""
    devices = [d for d in pop.devices if isinstance(d, MemorydDevice)]
    tick = 0
    while not stop.is_set():
        await asyncio.sleep(ACK_EVERY_S / ACK_SLICES)
        for device in devices[tick % ACK_SLICES :: ACK_SLICES]:
            await device.ack()
        tick += 1


async def step(
    pop: Population, mode: str, rate: float, duration: float, *, drain: float = 3.0,
    acks: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Offer ``rate`` sends/s for ``duration`` s; measure until delivered or ``drain`` s.
    ``acks=False``: the devices acknowledge nothing (to measure what acks cost)."""
    with no_collector_pauses():
        return await _step(pop, mode, rate, duration, drain=drain, acks=acks)


async def _step(
    pop: Population, mode: str, rate: float, duration: float, *, drain: float, acks: bool
) -> dict[str, Any]:
    rate = min(rate, MAX_RATE)
    rec = pop.recorder
    await asyncio.sleep(0.3)  # let the previous step's stragglers land
    rec.window()
    senders = [u[0] for u in pop.users]
    memories = pop.memories
    total = max(1, int(rate * duration))
    stop_acks = asyncio.Event()
    pump = (
        asyncio.create_task(_ack_pump(pop, stop_acks)) if acks and pop.kind == "memoryd" else None
    )
    clock = CpuClock(pop.server.stats)
    t0 = time.perf_counter()
    sent = k = 0
    lag_max = 0.0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - t0) * rate) + 1)
        lag_max = max(lag_max, (now - t0) - sent / rate)
        while sent < due:
            i = k % len(senders)
            k += 1
            device = senders[i]
            n = rec.next_number(time.perf_counter(), device)
            if mode == "typing":
                await device.send_typing(n)
            else:
                assert isinstance(device, MemorydDevice)
                await device.send_message(memories[i], n, CONTENT)
            sent += 1
        await asyncio.sleep(0.001)
    offered_for = time.perf_counter() - t0
    expected = sent * pop.receivers_per_send
    deadline = time.perf_counter() + drain
    while rec.delivered < expected and time.perf_counter() < deadline:  # noqa: ASYNC110 - a deadline-bounded poll of a counter
        await asyncio.sleep(0.01)
    cpu = clock.read()
    stop_acks.set()
    if pump is not None:
        await pump
    delivered = rec.delivered
    lat = percentiles(rec.latencies)
    # Over the sending window, or until the last delivery when stragglers came later.
    elapsed = max(offered_for, rec.last_at - t0)
    result = {
        "mode": mode,
        "offered_sends_per_s": rate,
        "achieved_sends_per_s": sent / offered_for,
        "sent": sent,
        "expected_deliveries": expected,
        "delivered": delivered,
        "delivery_ratio": delivered / expected if expected else 0.0,
        "deliveries_per_s": delivered / elapsed,
        "latency_ms": {k: v * 1000 for k, v in lat.items()},
        "server_cpu_util": cpu["server_cpu_util"],
        "client_cpu_util": cpu["client_cpu_util"],
        "server_cpu_us_per_delivery": cpu["server_cpu_s"] * 1e6 / delivered if delivered else None,
        "send_lag_max_ms": lag_max * 1000,
        "errors": dict(rec.errors),
        "replies": rec.replies,
    }
    result["ok"] = (
        result["delivery_ratio"] >= DELIVERY_FLOOR and lat["p99"] <= P99_LIMIT_S and not rec.errors
    )
    return result


BISECT_STEPS = 2


async def ramp(
    pop: Population,
    mode: str,
    *,
    fixed_rate: float,
    start: float,
    factor: float = 1.4,
    duration: float = 5.0,
    max_steps: int = 12,
    repeats: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """A warm-up, the fixed offered rate, then rising rates until p99 > 100 ms or delivery
    < 99 %, then two bisection steps between the last pass and that failure. When the
    first rate already fails, the ramp goes down instead (by factor² a step) until one
    passes, so a server slower than ``start`` still gets a figure."""
    # Not measured: fills the pool's prepared statements, caches and allocator arenas,
    # which would otherwise land in the fixed step's tail.
    await step(pop, mode, fixed_rate / 2, min(duration, 2.0))
    # The fixed step ``repeats`` times in a row: their spread is the run's own noise.
    fixed_steps = []
    for _ in range(max(1, repeats)):
        fixed_steps.append(await step(pop, mode, fixed_rate, duration))
        log(f"  {pop.kind} {mode} fixed {fixed_rate:.0f}/s: {_brief(fixed_steps[-1])}")
    fixed = fixed_steps[0]
    steps: list[dict[str, Any]] = []
    rate = start
    passed = failed = None  # the highest passing and lowest failing rates so far
    for _ in range(max_steps):
        result = await step(pop, mode, rate, duration)
        steps.append(result)
        log(f"  {pop.kind} {mode} ramp {rate:.0f}/s: {_brief(result)}")
        if result["ok"]:
            passed = rate
            rate *= factor
        elif passed is not None or rate < 10:
            failed = rate
            break
        else:
            rate /= factor * factor
    # Two bisection steps between the last pass and the first failure: the sustained
    # figure lands within a few percent instead of within a whole factor.
    for _ in range(BISECT_STEPS if passed is not None and failed is not None else 0):
        assert passed is not None and failed is not None
        rate = (passed * failed) ** 0.5
        result = await step(pop, mode, rate, duration)
        steps.append(result)
        log(f"  {pop.kind} {mode} bisect {rate:.0f}/s: {_brief(result)}")
        if result["ok"]:
            passed = rate
        else:
            failed = rate
    passing = [s for s in steps if s["ok"]]
    best = max(passing, key=lambda s: s["deliveries_per_s"]) if passing else None
    return {
        "server": pop.kind,
        "mode": mode,
        "sockets": len(pop.devices),
        "users": len(pop.users),
        "fixed": fixed,
        "fixed_repeats": fixed_steps,
        "noise": noise(fixed_steps),
        "steps": steps,
        "sustained_deliveries_per_s": best["deliveries_per_s"] if best else 0.0,
        "sustained_sends_per_s": best["achieved_sends_per_s"] if best else 0.0,
        "sustained_step": best,
        "client_bound": bool(best and best["client_cpu_util"] > 0.9),
    }


def noise(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The spread of repeated steps at one rate: min and max of p50, p99, deliveries/s and
    server CPU per delivery."""

    def spread(values: list[float]) -> list[float]:
        return [round(min(values), 1), round(max(values), 1)] if values else []

    return {
        "steps": len(steps),
        "p50_ms": spread([s["latency_ms"]["p50"] for s in steps]),
        "p99_ms": spread([s["latency_ms"]["p99"] for s in steps]),
        "deliveries_per_s": spread([s["deliveries_per_s"] for s in steps]),
        "server_cpu_us_per_delivery": spread(
            [s["server_cpu_us_per_delivery"] for s in steps if s["server_cpu_us_per_delivery"]]
        ),
    }


def _brief(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["server_cpu_us_per_delivery"]
    return (
        f"{r['deliveries_per_s']:.0f} deliv/s, {100 * r['delivery_ratio']:.1f}% delivered, "
        f"p50/p99 {lat['p50']:.1f}/{lat['p99']:.1f} ms, server {100 * r['server_cpu_util']:.0f}% "
        f"({cpu or 0:.1f} us/deliv), client {100 * r['client_cpu_util']:.0f}%"
        + (f", errors {r['errors']}" if r["errors"] else "")
    )


async def teardown(pop: Population) -> None:
    await close_all(pop.devices)
