"""Idle cost and scale: RSS per device session, and CPU per delivery at 1k vs 10k sockets.

The server starts; a few warm-up sessions connect (so one-time allocations are in the
baseline), its RSS is read; then sessions are added up to each size (authenticated device
sessions: ``hello`` answered by ``welcome``, replay done, idle) and RSS is read again after
they settle: ``(RSS(n) - RSS(warm-up)) / (n - warm-up)`` is the cost of one session. At
each size a fixed-rate typing fan-out step measures the server's CPU per delivery, so the
10k figure can be set against the 1k one.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

from loadtests.bench.common import Account, ServerProcess
from loadtests.bench.fanout import Population, populate, step

WARMUP_USERS = 10


async def settle(server: ServerProcess, seconds: float = 1.5) -> int:
    """RSS after the server has been quiet for a moment."""
    await asyncio.sleep(seconds)
    assert server.stats is not None
    return server.stats.rss_bytes()


async def run(
    server: ServerProcess,
    accounts: Sequence[Account],
    sizes: Sequence[int],
    *,
    rate: float,
    duration: float,
    log: Any = print,
) -> dict[str, Any]:
    per_user = 3
    pop: Population = await populate("memoryd", server, WARMUP_USERS, accounts=accounts)
    base_sockets = len(pop.devices)
    gc.collect()
    base_rss = await settle(server)
    log(f"  idle: {base_sockets} warm-up sockets, server RSS {base_rss / 2**20:.1f} MiB")
    points = []
    for size in sizes:
        users = max(WARMUP_USERS + 1, -(-size // per_user))
        await populate("memoryd", server, users, accounts=accounts, population=pop)
        sockets = len(pop.devices)
        rss = await settle(server)
        per_session = (rss - base_rss) / (sockets - base_sockets)
        fan = await step(pop, "typing", rate, duration)
        point = {
            "sockets": sockets,
            "rss_mib": rss / 2**20,
            "rss_per_session_kib": per_session / 1024,
            "typing_step": fan,
            "cpu_us_per_delivery": fan["server_cpu_us_per_delivery"],
        }
        points.append(point)
        log(
            f"  idle: {sockets} sockets, RSS {rss / 2**20:.1f} MiB, "
            f"{per_session / 1024:.1f} KiB/session; typing {rate:.0f}/s: "
            f"{fan['server_cpu_us_per_delivery'] or 0:.1f} us/delivery, "
            f"p99 {fan['latency_ms']['p99']:.1f} ms, {100 * fan['delivery_ratio']:.1f}% delivered"
        )
    lost = sum(1 for d in pop.devices if d.closed.is_set())
    return {
        "baseline_sockets": base_sockets,
        "baseline_rss_mib": base_rss / 2**20,
        "points": points,
        "closed_during_run": lost,
        "population": pop,
    }
