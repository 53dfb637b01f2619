"""Run memoryd's benchmarks; write a JSON report, a Markdown table and a plot.

    python -m loadtests.bench                       # everything (what `make bench` runs)
    python -m loadtests.bench --only fanout,resume  # some of it
    python -m loadtests.bench --quick               # seconds-long smoke run, tiny N

Benchmarks (docs/benchmarks.md explains each one):

* ``anchor``: message.send's transaction straight on asyncpg (and through memoryd's
  storage layer), closed loops: the database limit.
* ``fanout``: typing signals through memoryd, the bare-websockets relay and the
  python-socketio relay, driven identically; then durable ``message.send`` through
  memoryd (a step at half the anchor's rate, then a ramp), and that step again with
  the embedding of messages and/or the devices' acks switched off (``--no-parts``).
* ``idle``: RSS per device session at 1k and 10k sockets, and CPU per delivery at both.
* ``resume``: events/s replayed to a device that missed ``--resume-events`` events.
* ``seed``: the seed profile under locust (ramp to 100 then 200 users), PASS/FAIL.
* ``files``: upload and download MiB/s of one ``--file-mib`` file through ``/api/files``,
  and the server's RSS while it flows (it must stay flat).
* ``search``: query latency per mode (text, semantic, hybrid) for a user with 10k and one
  with 100k messages among 1M, and indexing throughput (``loadtests/bench/search.py``).

Everything runs on 127.0.0.1: an embedded PostgreSQL in a temporary directory (or
``--database-url``), pinned to core 0 (``--postgres-core``: its postmaster and every
process it forked, all threads, by sched_setaffinity, as ``taskset -a -p -c 0`` would;
backends forked later inherit it); this load generator (and locust) pinned to core 1.
Each server under test is its own process: on core 0 for the ephemeral benchmarks (where
PostgreSQL idles), and on core 1 with the load generator for the durable ones
(``--durable-server-core``), so PostgreSQL has core 0 to itself both in the anchor and in
durable ``message.send``. Every loop is bounded in count and time. Each target is printed
PASS or FAIL at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from loadtests.bench import anchor, fanout, files, idle, pgwaits, report, resume, seed
from loadtests.bench import search as search_bench
from loadtests.bench.common import (
    MAX_SOCKETS,
    MAX_USERS,
    ROOT,
    Account,
    Memoryd,
    ServerProcess,
    family_cpu_seconds,
    machine,
    pin,
    pin_postgres,
    postgres,
    provision,
    raise_fd_limit,
    relay_server,
    running,
    scrape_histograms,
    versions,
    workdir,
)

ALL = ("anchor", "fanout", "idle", "resume", "seed", "files", "search")
PEERS = ("memoryd", "ws-relay", "socketio")
# The server's histograms read after the durable steps (its stages, its GC pauses).
_HISTOGRAMS = ("memoryd_send_stage_seconds", "memoryd_gc_pause_seconds")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {ALL}")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run with tiny N")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results")
    p.add_argument("--plot", type=Path, help="write the latency-vs-load plot (PNG) here")
    p.add_argument("--codec", choices=["json", "msgpack"], default="json")
    g = p.add_argument_group("fan-out")
    g.add_argument("--users", type=int, default=1000, help="users, 3 devices each (1000)")
    g.add_argument("--fixed-rate", type=float, default=3000, help="typing sends/s (3000)")
    g.add_argument("--ramp-start", type=float, default=3000, help="typing sends/s (3000)")
    g.add_argument("--ramp-factor", type=float, default=1.3)
    g.add_argument("--step-seconds", type=float, default=5.0)
    g.add_argument("--max-steps", type=int, default=12)
    g.add_argument("--peers", default=",".join(PEERS))
    g = p.add_argument_group("durable message.send and the anchor")
    g.add_argument("--message-users", type=int, default=300, help="users for message.send")
    g.add_argument("--concurrency", type=int, default=20, help="anchor connections (20)")
    g.add_argument("--anchor-seconds", type=float, default=10.0)
    g.add_argument(
        "--fixed-repeats", type=int, default=3, help="fixed-rate steps in a row (noise) (3)"
    )
    g.add_argument(
        "--no-before",
        action="store_true",
        help="skip the fixed steps of durable sends on the transaction path "
        "(MEMORYD_SEND_ONE_STATEMENT=off), the 'before' of the one-statement send",
    )
    g.add_argument(
        "--no-parts",
        action="store_true",
        help="skip the fixed steps with parts of a durable send's work switched off "
        "(embedding, acks): what each part costs",
    )
    g = p.add_argument_group("cores")
    g.add_argument("--postgres-core", type=int, default=0, help="PostgreSQL's core (0)")
    g.add_argument(
        "--durable-server-core", type=int, default=1, help="memoryd's core for durable sends (1)"
    )
    g = p.add_argument_group("idle cost")
    g.add_argument("--sizes", default="1000,10000", help="socket counts (1000,10000)")
    g.add_argument("--idle-rate", type=float, default=2000, help="typing sends/s at each size")
    g = p.add_argument_group("resume")
    g.add_argument("--resume-events", type=int, default=100_000)
    g = p.add_argument_group("search")
    g.add_argument("--search-total", type=int, default=1_000_000, help="messages in the table")
    g.add_argument(
        "--search-reuse",
        action="store_true",
        help="with --database-url: measure a corpus an earlier run left there (or leave one)",
    )
    g.add_argument("--search-sizes", default="10000,100000", help="the two measured users")
    g.add_argument("--search-queries", type=int, default=200, help="queries per mode and user")
    g.add_argument("--search-other-users", type=int, default=890)
    g.add_argument(
        "--search-other-vectors",
        type=int,
        default=100_000,
        help="other users' documents embedded too (the HNSW index is shared)",
    )
    g = p.add_argument_group("seed profile (locust)")
    g.add_argument("--stage-scale", type=float, default=0.1, help="seed stage length factor")
    g.add_argument("--seed-peak", type=int, default=200)
    g.add_argument("--accounts", type=int, default=200)
    g.add_argument("--seed-classes", default="RestUser,SocketUser")
    g = p.add_argument_group("files")
    g.add_argument("--file-mib", type=int, default=50, help="size of the file (50 MiB)")
    g.add_argument(
        "--file-backends", default="local,s3", help="blob stores: local, s3 (moto's server)"
    )
    return p


def _quick(args: argparse.Namespace) -> None:
    args.users, args.message_users = 4, 4
    args.fixed_rate = args.ramp_start = 40
    args.step_seconds, args.max_steps = 1.0, 2
    args.concurrency, args.anchor_seconds = 2, 1.0
    args.fixed_repeats = 2
    args.sizes, args.idle_rate = "45,90", 20
    args.resume_events = 2000
    args.stage_scale, args.seed_peak, args.accounts = 0.01, 4, 4
    args.file_mib = 4
    args.search_total, args.search_sizes, args.search_queries = 3000, "300,1000", 10
    args.search_other_users, args.search_other_vectors = 10, 200


def _log(*parts: Any) -> None:
    print(*parts, flush=True)


async def main(args: argparse.Namespace) -> int:
    only = [x for x in args.only.split(",") if x]
    unknown = set(only) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {sorted(unknown)}")
    args.users = min(args.users, MAX_USERS)
    sizes = [min(int(s), MAX_SOCKETS) for s in args.sizes.split(",") if s]
    fd_limit = raise_fd_limit(max(sizes, default=0) * 2 + 4096)
    pin(os.getpid(), 1)
    scratch = workdir()
    started = time.time()
    report_data: dict[str, Any] = {
        "command": "python -m loadtests.bench " + shlex.join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "machine": machine(),
        "fd_limit": fd_limit,
        "cores": f"PostgreSQL pinned to core {args.postgres_core}; load generator and locust "
        f"to core 1; server under test on core 0, on core {args.durable_server_core} for "
        "durable message.send",
        "results": {},
    }
    results = report_data["results"]
    try:
        async with postgres(args.database_url, scratch) as pg:
            report_data["versions"] = versions(pg.version)
            # Only the PostgreSQL this run started: a --database-url one may serve others.
            pinned = [] if args.database_url else await _pin_postgres(pg.dsn, args.postgres_core)
            args.postmaster = pinned[0] if pinned else None
            report_data["postgres_pinned_pids"] = len(pinned)
            if not pinned:
                report_data["cores"] += " (PostgreSQL not pinned: --database-url or one core)"
            md = Memoryd(pg, scratch)
            _log(f"PostgreSQL {pg.version}; scratch {scratch}; fd limit {fd_limit}")
            if "anchor" in only or "fanout" in only:
                await _anchor_and_fanout(args, md, only, results)
            if "idle" in only:
                results["idle"] = await _idle(args, md, sizes, fd_limit)
            if "resume" in only:
                results["resume"] = await _resume(args, md)
            if "seed" in only:
                results["seed"] = await _seed(args, md, scratch)
            if "files" in only:
                for backend in [b for b in args.file_backends.split(",") if b]:
                    key = "files" if backend == "local" else f"files_{backend}"
                    results[key] = await _files(args, md, backend)
            if "search" in only:
                small, large = (int(x) for x in args.search_sizes.split(","))
                search_dsn = md.pg.dsn
                if args.search_reuse:  # a database of its own, kept for the next run
                    search_dsn = await search_bench.kept_database(md.pg.admin_dsn)
                results["search"] = await search_bench.run(
                    search_dsn, md.tokens, total=args.search_total, sizes=(small, large),
                    queries=args.search_queries, other_users=args.search_other_users,
                    vectors_others=args.search_other_vectors, log=_log,
                    reuse=args.search_reuse,
                )  # fmt: skip
    finally:
        report_data["finished_loadavg"] = machine()["loadavg"]
        report_data["seconds"] = time.time() - started
        shutil.rmtree(scratch, ignore_errors=True)
    report_data["targets"] = report.targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report_data, indent=2, default=str))
    table = report.markdown(report_data)
    (args.out / "bench.md").write_text(table)
    if args.plot:
        report.plot(results, args.plot)
    print(table)
    for t in report_data["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["met"]]
        print(f"{verdict}  {t['target']}: {t['value']} (bar {t['bar']})")
    return 0


async def _pin_postgres(dsn: str, core: int) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        # While the backend lives: its /proc entry names the postmaster. After close it
        # may be gone already, and PostgreSQL would silently stay unpinned.
        return pin_postgres(backend, core)
    finally:
        await conn.close()


async def _anchor_and_fanout(
    args: argparse.Namespace, md: Memoryd, only: list[str], results: dict[str, Any]
) -> None:
    msg_users = min(args.message_users, MAX_USERS)
    # The transaction-path ("before") steps get users of their own: the bench's
    # clientMsgIds (b<n>) repeat from one population to the next.
    before_users = msg_users if "fanout" in only and not args.no_before else 0
    parts_users = msg_users * len(PARTS) if "fanout" in only and not args.no_parts else 0
    need = max(args.users if "fanout" in only else 0, msg_users + before_users + parts_users)
    _log(f"provisioning {need} users")
    accounts = await provision(md.pg.dsn, md.tokens, need)
    anchor_tps = None
    if "anchor" in only:
        _log("anchor: message.send's transaction on asyncpg")
        memories = await anchor.memories_for(md.pg.dsn, accounts[:msg_users])
        pairs = [(a.user_id, m) for a, m in zip(accounts, memories, strict=False)]
        kw = {
            "concurrency": args.concurrency,
            "duration": args.anchor_seconds,
            "content": fanout.CONTENT,
        }
        raw = await anchor.raw(md.pg.dsn, pairs, **kw)
        one = await anchor.raw_one_statement(md.pg.dsn, pairs, **kw)
        layer = await anchor.storage_layer(md.pg.dsn, pairs, **kw)
        for r in (raw, one, layer):
            _log(f"  {r['kind']}: {r['tps']:.0f} tx/s, p99 {r['latency_ms']['p99']:.1f} ms")
        results["anchor"] = {"asyncpg": raw, "asyncpg_one_statement": one, "storage_layer": layer}
        anchor_tps = raw["tps"]
    if "fanout" not in only:
        return
    out: dict[str, Any] = {}
    for kind in [p for p in args.peers.split(",") if p]:
        server = md.server() if kind == "memoryd" else relay_server(kind, md.scratch)
        async with running(server):
            _log(f"fan-out: {kind}, {args.users} users x 3 devices")
            pop = await fanout.populate(
                kind, server, args.users, codec=args.codec, accounts=accounts
            )
            try:
                out[kind] = await fanout.ramp(
                    pop, "typing", fixed_rate=args.fixed_rate, start=args.ramp_start,
                    factor=args.ramp_factor, duration=args.step_seconds,
                    max_steps=args.max_steps, log=_log,
                )  # fmt: skip
            finally:
                await fanout.teardown(pop)
    results["fanout_typing"] = out
    half = (anchor_tps or args.ramp_start / 10) / 2
    if not args.no_before:
        # Before: the same fixed steps with every send on the transaction path.
        server = md.server(
            "memoryd-tx-path", core=args.durable_server_core, MEMORYD_SEND_ONE_STATEMENT="off"
        )
        _log(f"durable message.send on the transaction path: {msg_users} users x 3 devices")
        results["fanout_message_transaction_path"] = await _durable(
            args, md, server, accounts[msg_users : 2 * msg_users], half, max_steps=0
        )
    server = md.server(core=args.durable_server_core)
    _log(f"durable message.send: memoryd, {msg_users} users x 3 devices")
    results["fanout_message"] = await _durable(
        args, md, server, accounts[:msg_users], half, max_steps=args.max_steps
    )
    if not args.no_parts:
        _log(f"durable message.send with parts switched off: {msg_users} users x 3 devices each")
        first = msg_users + before_users
        results["durable_parts"] = await _durable_parts(
            args, md, accounts[first : first + parts_users], half
        )


# The durable send's fixed step again, with parts of its work switched off, one server
# each: the server's CPU and the tail without the embedding of each message (the
# sweeper's CPU here, the vectors and their HNSW index in PostgreSQL), or without the
# devices' acks (a frame each every 0.5 s). (name, server env, acks)
PARTS: tuple[tuple[str, dict[str, str], bool], ...] = (
    ("everything", {}, True),
    ("no embedding", {"MEMORYD_EMBEDDER": "none"}, True),
    ("no acks", {}, False),
    ("neither", {"MEMORYD_EMBEDDER": "none"}, False),
)


async def _durable_parts(
    args: argparse.Namespace, md: Memoryd, accounts: list[Account], rate: float
) -> list[dict[str, Any]]:
    """Each of `PARTS`: a warm-up, then ``--fixed-repeats`` fixed steps at ``rate``, with
    the server's and PostgreSQL's CPU over each step."""
    out = []
    per = len(accounts) // len(PARTS)
    for i, (name, env, acks) in enumerate(PARTS):
        server = md.server(f"parts-{i}", core=args.durable_server_core, **env)
        async with running(server):
            pop = await fanout.populate(
                "memoryd", server, per, codec=args.codec, accounts=accounts[i * per : (i + 1) * per]
            )
            try:
                await fanout.create_memories(pop)
                await fanout.step(pop, "message", rate / 2, min(args.step_seconds, 2.0), acks=acks)
                steps = []
                for _ in range(max(1, args.fixed_repeats)):
                    pg0 = family_cpu_seconds(args.postmaster) if args.postmaster else 0.0
                    t0 = time.perf_counter()
                    result = await fanout.step(pop, "message", rate, args.step_seconds, acks=acks)
                    if args.postmaster:
                        pg = family_cpu_seconds(args.postmaster) - pg0
                        result["postgres_cpu_util"] = pg / (time.perf_counter() - t0)
                    steps.append(result)
                    pg_note = (
                        f", PostgreSQL {100 * result['postgres_cpu_util']:.0f}%"
                        if "postgres_cpu_util" in result else ""
                    )  # fmt: skip
                    _log(f"  {name}: {fanout._brief(result)}{pg_note}")
            finally:
                await fanout.teardown(pop)
        out.append({"part": name, "env": env, "acks": acks, "steps": steps,
                    "noise": fanout.noise(steps)})  # fmt: skip
    return out


async def _durable(
    args: argparse.Namespace, md: Memoryd, server: ServerProcess, accounts: list[Account],
    half: float, *, max_steps: int,
) -> dict[str, Any]:  # fmt: skip
    """Durable sends on ``server``: the fixed steps at ``half`` the anchor's rate, then
    up to ``max_steps`` ramp steps; PostgreSQL's waits and the server's histograms."""
    async with running(server):
        pop = await fanout.populate(
            "memoryd", server, len(accounts), codec=args.codec, accounts=accounts
        )
        try:
            await fanout.create_memories(pop)
            waits: dict[str, Any] = {}
            async with pgwaits.sampled(md.pg.dsn, waits):
                result = await fanout.ramp(
                    pop, "message", fixed_rate=half, start=half, factor=args.ramp_factor,
                    duration=args.step_seconds, max_steps=max_steps,
                    repeats=args.fixed_repeats, log=_log,
                )  # fmt: skip
            result["postgres_waits"] = waits
            result["half_anchor_rate"] = half
            result["server_histograms"] = await scrape_histograms(server, _HISTOGRAMS)
            return result
        finally:
            await fanout.teardown(pop)


async def _idle(
    args: argparse.Namespace, md: Memoryd, sizes: list[int], fd_limit: int
) -> dict[str, Any]:
    if fd_limit < max(sizes) + 1024:
        _log(f"idle: the open-file limit is {fd_limit}; sizes above it cannot connect")
        sizes = [s for s in sizes if s + 1024 <= fd_limit]
    users = -(-max(sizes) // 3) + idle.WARMUP_USERS + 1
    _log(f"idle: provisioning {users} users")
    accounts = await provision(md.pg.dsn, md.tokens, users)
    server = md.server("memoryd-idle")
    async with running(server):
        result = await idle.run(
            server, accounts, sizes, rate=args.idle_rate, duration=args.step_seconds, log=_log
        )
        pop = result.pop("population")
        await fanout.teardown(pop)
    return result


async def _resume(args: argparse.Namespace, md: Memoryd) -> dict[str, Any]:
    (account,) = await provision(md.pg.dsn, md.tokens, 1)
    server = md.server("memoryd-resume")
    async with running(server):
        _log(f"resume: {args.resume_events} missed events")
        return await resume.run(server, md.pg.dsn, account, events=args.resume_events, log=_log)


async def _seed(args: argparse.Namespace, md: Memoryd, scratch: Path) -> dict[str, Any]:
    server = md.server("memoryd-seed")
    async with running(server):
        _log(f"seed profile: stage scale {args.stage_scale}, peak {args.seed_peak} users")
        return await seed.run(
            server, scratch, stage_scale=args.stage_scale, peak=args.seed_peak,
            accounts=args.accounts, classes=[c for c in args.seed_classes.split(",") if c],
            codec=args.codec, log=_log,
        )  # fmt: skip


async def _files(args: argparse.Namespace, md: Memoryd, backend: str) -> dict[str, Any]:
    (account,) = await provision(md.pg.dsn, md.tokens, 1)
    async with files.blob_backend(backend) as env:
        server = md.server(f"memoryd-files-{backend}", MEMORYD_RATE_LIMIT_UPLOAD="off", **env)
        async with running(server):
            _log(f"files ({backend}): one {args.file_mib} MiB file up and down")
            result = await files.run(server, account, size_mib=args.file_mib, log=_log)
    result["backend"] = backend
    return result


if __name__ == "__main__":
    parsed = _parser().parse_args()
    if parsed.quick:
        _quick(parsed)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(uvloop.run(main(parsed)))
