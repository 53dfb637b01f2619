"""The seed plan's load profile for locust, with its pass/fail thresholds.

Stages (the seed's k6 options): ramp to 100 users in 2 min, hold 5 min, ramp to 200 in
2 min, hold 5 min, ramp down in 2 min, each ramp linear. ``--stage-scale 0.1`` shortens
every stage to a tenth; ``--seed-peak`` scales the user counts (200 by default; the first
plateau is half of it). When locust quits it prints PASS or FAIL against the thresholds
(p95 < 200 ms as the seed's "API response time", p99 < 1.5 s, failures < 0.1 %, over every
request locust counted) and exits non-zero on FAIL; ``--seed-summary FILE`` also writes
them as JSON. Use it next to the locustfile::

    locust -f loadtests/locustfile.py,loadtests/seed_shape.py --headless \\
        --host http://127.0.0.1:8080 --stage-scale 0.1
"""

from __future__ import annotations

import json
import math
from typing import Any

from locust import LoadTestShape, events
from locust.env import Environment

STAGES = ((120, 100), (300, 100), (120, 200), (300, 200), (120, 0))  # (seconds, users)
THRESHOLDS = {"p95_ms": 200.0, "p99_ms": 1500.0, "fail_ratio": 0.001}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("seed profile")
    group.add_argument("--stage-scale", type=float, default=1.0, help="stage length factor")
    group.add_argument("--seed-peak", type=int, default=200, help="users at the peak (200)")
    group.add_argument("--seed-summary", default="", help="write the verdict as JSON here")


class SeedShape(LoadTestShape):
    """k6-style linear stages; locust follows the target once a second."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        scale = options.stage_scale if options else 1.0
        peak = options.seed_peak if options else 200
        now = self.get_run_time()
        start, previous = 0.0, 0.0
        for seconds, users in STAGES:
            length, target = seconds * scale, users * peak / 200
            if now < start + length:
                current = previous + (target - previous) * (now - start) / length
                return max(1, math.ceil(current)), max(1.0, peak / 2)
            start, previous = start + length, target
        return None


def verdict(environment: Environment) -> dict[str, Any]:
    total = environment.stats.total
    figures = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "fail_ratio": total.fail_ratio,
        "p50_ms": total.get_response_time_percentile(0.50),
        "p95_ms": total.get_response_time_percentile(0.95),
        "p99_ms": total.get_response_time_percentile(0.99),
        "rps": total.total_rps,
    }
    checks = {
        "p95_ms": figures["p95_ms"] < THRESHOLDS["p95_ms"],
        "p99_ms": figures["p99_ms"] < THRESHOLDS["p99_ms"],
        "fail_ratio": figures["fail_ratio"] < THRESHOLDS["fail_ratio"],
    }
    by_name = {
        f"{e.method} {e.name}": {
            "requests": e.num_requests,
            "failures": e.num_failures,
            "p50_ms": e.get_response_time_percentile(0.5),
            "p95_ms": e.get_response_time_percentile(0.95),
            "p99_ms": e.get_response_time_percentile(0.99),
        }
        for e in environment.stats.entries.values()
    }
    return {
        "figures": figures,
        "thresholds": THRESHOLDS,
        "checks": checks,
        "passed": all(checks.values()) and total.num_requests > 0,
        "by_name": by_name,
        "errors": {str(k): v.occurrences for k, v in environment.stats.errors.items()},
    }


@events.quitting.add_listener
def _judge(environment: Environment, **_kw: Any) -> None:
    result = verdict(environment)
    f = result["figures"]
    print(
        f"seed profile: {'PASS' if result['passed'] else 'FAIL'}: {f['requests']} requests, "
        f"p95 {f['p95_ms']:.0f} ms (< 200), p99 {f['p99_ms']:.0f} ms (< 1500), "
        f"failures {100 * f['fail_ratio']:.3f} % (< 0.1)"
    )
    options = environment.parsed_options
    if options is not None and options.seed_summary:
        with open(options.seed_summary, "w") as out:
            json.dump(result, out, indent=2)
    if not result["passed"]:
        environment.process_exit_code = 1
