"""Seconds-long runs of every benchmark (``python -m loadtests.bench --quick``) with tiny N,
so the harness, the peers, the locustfile and the report do not rot.

They check that each benchmark runs and that nothing is lost on the way (every send
delivered, every missed event replayed, the seed profile passed), never a performance
figure: the machine may be busy.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]


async def bench(scratch: Path, admin_dsn: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    """Run the harness on the tests' PostgreSQL; return its JSON report."""
    out = scratch / f"bench-{'-'.join(args).replace('/', '_')[:60]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtests.bench", "--quick", "--database-url", admin_dsn,
        "--out", str(out), *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = stdout.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    report: dict[str, Any] = json.loads((out / "bench.json").read_text())
    report["_stdout"] = text
    report["_markdown"] = (out / "bench.md").read_text()
    return report


def assert_every_send_delivered(step: dict[str, Any]) -> None:
    assert step["sent"] > 0
    assert step["delivered"] == step["expected_deliveries"] == 2 * step["sent"], step
    assert step["errors"] == {}, step
    assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"] <= step["latency_ms"]["max"]
    assert step["server_cpu_util"] >= 0


async def test_anchor_and_fanout_through_memoryd_and_both_peers(
    scratch_dir: Path, admin_dsn: str
) -> None:
    plot = scratch_dir / "bench-plot.png"
    report = await bench(scratch_dir, admin_dsn, "--only", "anchor,fanout", "--plot", str(plot))
    results = report["results"]
    for kind in ("asyncpg", "asyncpg_one_statement", "storage_layer"):
        assert results["anchor"][kind]["transactions"] > 0
    typing = results["fanout_typing"]
    assert set(typing) == {"memoryd", "ws-relay", "socketio"}
    for ramp in typing.values():
        assert ramp["sockets"] == 12
        for step in (ramp["fixed"], *ramp["steps"]):
            assert_every_send_delivered(step)
    durable = results["fanout_message"]
    for step in (durable["fixed"], *durable["steps"]):
        assert_every_send_delivered(step)
        assert step["replies"] == step["sent"]  # every message.send answered
    assert len(durable["fixed_repeats"]) == durable["noise"]["steps"] == 2  # --quick
    assert "Noise of this run" in report["_markdown"]
    names = {t["target"] for t in report["targets"]}
    assert "ephemeral fan-out vs ws-relay" in names
    assert "durable message.send vs storage anchor" in names
    assert "server CPU per durable delivery (median fixed step)" in names
    for t in report["targets"]:  # each target printed with its verdict
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["met"]]
        assert f"{verdict}  {t['target']}:" in report["_stdout"]
    assert "| memoryd message.send |" in report["_markdown"]
    parts = results["durable_parts"]  # the same step with embedding or acks switched off
    assert [p["part"] for p in parts] == ["everything", "no embedding", "no acks", "neither"]
    for part in parts:
        assert len(part["steps"]) == 2
        for step in part["steps"]:
            assert_every_send_delivered(step)
    assert "| no embedding |" in report["_markdown"]
    assert plot.stat().st_size > 10_000
    assert report["machine"]["nproc"] >= 1 and report["versions"]["postgresql"]


async def test_idle_sessions_and_their_cost(scratch_dir: Path, admin_dsn: str) -> None:
    report = await bench(scratch_dir, admin_dsn, "--only", "idle")
    idle = report["results"]["idle"]
    assert [p["sockets"] for p in idle["points"]] == [45, 90]
    assert idle["closed_during_run"] == 0
    for point in idle["points"]:
        assert point["rss_mib"] > 0
        assert_every_send_delivered(point["typing_step"])


async def test_resume_replays_every_missed_event(scratch_dir: Path, admin_dsn: str) -> None:
    report = await bench(scratch_dir, admin_dsn, "--only", "resume")
    runs = report["results"]["resume"]["runs"]
    assert [r["codec"] for r in runs] == ["json", "msgpack"]
    for run in runs:
        assert run["events"] == 2000
        assert run["events_per_s"] > 0


async def test_the_seed_profile_runs_under_locust_and_passes(
    scratch_dir: Path, admin_dsn: str
) -> None:
    report = await bench(scratch_dir, admin_dsn, "--only", "seed")
    seed = report["results"]["seed"]
    assert seed["exit_code"] == 0 and seed["passed"], report["_stdout"][-3000:]
    names = set(seed["by_name"])
    # REST and socket users both ran; replies and fan-out deliveries are locust requests
    assert {"POST /api/memories [create]", "WS hello", "WS memory.create"} <= names, names
    assert any(n.startswith("WS deliver") for n in names), names
    assert "seed profile: PASS" in report["_stdout"]


async def test_a_file_goes_up_and_down_whole(scratch_dir: Path, admin_dsn: str) -> None:
    report = await bench(scratch_dir, admin_dsn, "--only", "files")
    for key, backend in (("files", "local"), ("files_s3", "s3")):
        files = report["results"][key]
        assert files["size_mib"] == 4 and files["backend"] == backend
        assert files["upload_mib_per_s"] > 0 and files["download_mib_per_s"] > 0
        assert files["samples"] > 2
        assert f"files (4 MiB, {backend})" in report["_markdown"]


async def test_search_loads_indexes_and_answers_every_mode(
    scratch_dir: Path, admin_dsn: str
) -> None:
    report = await bench(scratch_dir, admin_dsn, "--only", "search")
    search = report["results"]["search"]
    assert search["messages_total"] == 3000  # the bulk load (counted before the sends)
    assert search["text_indexing"]["messages_per_s"] > 0
    modes = ["text", "semantic", "hybrid"] if search["vector_store"] else ["text"]
    for label in ("10k", "100k"):
        per = search[f"user_{label}"]
        for mode in modes:
            assert per[mode]["queries"] == 10 and per[mode]["with_results"] > 0, (label, mode)
            lat = per[mode]["latency_ms"]
            assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    if search["vector_store"]:
        assert search["embedding_large"]["documents"] == 1000 + search_memories(1000)
    assert "| search (user's messages) |" in report["_markdown"]


def search_memories(messages: int) -> int:
    return max(1, messages // 500)  # loadtests/bench/search.py: a memory per 500 messages
