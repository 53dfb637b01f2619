"""The seed profile: locust, headless, against a memoryd node, judged on the seed's
thresholds (loadtests/locustfile.py + loadtests/seed_shape.py)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

from loadtests.bench.common import BIN, ROOT, ServerProcess, pin

# The length of seed_shape.STAGES (not imported: importing locust patches this process
# with gevent).
SEED_SECONDS = 2 * 60 + 5 * 60 + 2 * 60 + 5 * 60 + 2 * 60


def stage_seconds(scale: float) -> float:
    return SEED_SECONDS * scale


async def run(
    server: ServerProcess,
    scratch: Path,
    *,
    stage_scale: float,
    peak: int,
    accounts: int,
    classes: list[str],
    codec: str = "json",
    core: int | None = 1,
    log: Any = print,
) -> dict[str, Any]:
    prefix = scratch / "seed"
    summary = scratch / "seed-summary.json"
    files = f"{ROOT / 'loadtests' / 'locustfile.py'},{ROOT / 'loadtests' / 'seed_shape.py'}"
    argv = [
        str(BIN / "locust"), "-f", files, "--headless", "--host", server.url,
        "--stage-scale", str(stage_scale), "--seed-peak", str(peak),
        "--accounts", str(accounts), "--ws-codec", codec,
        "--csv", str(prefix), "--seed-summary", str(summary),
        "--only-summary", "--loglevel", "WARNING", *classes,
    ]  # fmt: skip
    log(f"  seed: {' '.join(argv[1:])}")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    pin(proc.pid, core)
    # the stages, the registrations (argon2: ~0.15 s each over the server's core), slack
    limit = stage_seconds(stage_scale) + accounts * 0.5 + 120
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"locust did not finish in {math.ceil(limit)} s") from None
    text = out.decode(errors="replace")
    verdict_line = next((ln for ln in text.splitlines() if ln.startswith("seed profile:")), "")
    registered = next((ln for ln in text.splitlines() if "registered" in ln), "")
    log(f"  {registered.strip()}")
    log(f"  {verdict_line}")
    if " 0 requests" in verdict_line:  # locust ran nothing: show why
        log(text[-3000:])
    if not summary.exists():
        raise RuntimeError(f"locust wrote no summary (exit {proc.returncode}):\n{text[-3000:]}")
    result: dict[str, Any] = json.loads(summary.read_text())
    result.update(
        exit_code=proc.returncode,
        stage_scale=stage_scale,
        peak_users=peak,
        accounts=accounts,
        classes=classes,
        codec=codec,
        command="locust " + " ".join(argv[1:]),
    )
    return result
