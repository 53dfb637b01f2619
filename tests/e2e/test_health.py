"""/health, /ready and /metrics as the seed's healthRouter and Prometheus metrics define them."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memoryd import __version__
from tests.conftest import StartServer
from tests.helpers import Api

pytestmark = pytest.mark.storage


async def test_health_reports_every_check(api: Api) -> None:
    resp = await api.get("/health")
    assert resp.status == 200, resp.body
    body = resp.body
    assert body["status"] == "healthy"
    assert body["version"] == __version__
    stamp = datetime.fromisoformat(body["timestamp"])
    assert stamp.tzinfo is not None
    assert abs(datetime.now(UTC) - stamp) < timedelta(seconds=5)
    assert isinstance(body["uptime"], int | float)
    assert body["uptime"] >= 0
    assert body["checks"] == {
        "database": "healthy",
        "redis": "disabled",
        "memory": body["checks"]["memory"],
    }
    assert body["checks"]["memory"] in ("healthy", "warning")
    later = await api.get("/health")
    assert later.body["uptime"] >= body["uptime"]


async def test_ready_is_ready(api: Api) -> None:
    resp = await api.get("/ready")
    assert resp.status == 200
    assert resp.body == {"status": "ready"}


async def test_health_and_ready_need_no_token(api: Api) -> None:
    bad = {"Authorization": "Bearer garbage"}
    assert (await api.get("/health", headers=bad)).status == 200
    assert (await api.get("/ready", headers=bad)).status == 200
    assert (await api.get("/metrics", headers=bad)).status == 200


async def test_an_unreachable_redis_degrades_health_but_the_node_stays_ready(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    broken = await start_server(redis_url="redis://127.0.0.1:1")
    client = Api(http, broken.url)
    health = await client.get("/health")
    assert health.status == 200, health.body
    assert health.body["status"] == "degraded"
    assert health.body["checks"]["redis"] == "unhealthy"
    assert health.body["checks"]["database"] == "healthy"

    ready = await client.get("/ready")
    assert ready.status == 200
    assert ready.body == {"status": "ready", "degraded": "redis unavailable"}


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_metrics_is_prometheus_text_labelled_by_route_template(
    api: Api, start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    # A server of its own, so the counts below are exact.
    fresh = await start_server()
    user = Api(http, fresh.url, (await api.register()).token)
    memory = await user.post("/api/memories", json={"title": "metrics"})
    memory_id = memory.body["memory"]["id"]
    for _ in range(3):
        assert (await user.get(f"/api/memories/{memory_id}")).status == 200
    missing = await user.get(f"/api/memories/{uuid.uuid4()}")
    assert missing.status == 404
    assert (await user.get(f"/no/such/route/{uuid.uuid4()}")).status == 404

    resp = await Api(http, fresh.url).get("/metrics")
    assert resp.status == 200
    assert (resp.header("Content-Type") or "").startswith("text/plain")
    text = resp.body
    assert isinstance(text, str)
    for name in (
        "http_request_duration_seconds",
        "http_requests_total",
        "websocket_connections_active",
        "ai_requests_total",
        "ai_request_duration_seconds",
    ):
        assert f"# TYPE {name} " in text, name

    samples = _samples(text)
    totals = samples["http_requests_total"]
    route = "/api/memories/{id}"
    ok = [
        v
        for labels, v in totals
        if labels == {"method": "GET", "route": route, "status_code": "200"}
    ]
    assert ok == [3.0]
    not_found = [
        v
        for labels, v in totals
        if labels == {"method": "GET", "route": route, "status_code": "404"}
    ]
    assert not_found == [1.0]
    created = [
        v
        for labels, v in totals
        if labels == {"method": "POST", "route": "/api/memories", "status_code": "201"}
    ]
    assert created == [1.0]

    # No concrete id ever becomes a label: the label set stays bounded.
    assert memory_id not in text
    assert not re.search(r'route="[^"]*[0-9a-f]{8}-[0-9a-f]{4}-', text)
    assert any(labels.get("route") == "unmatched" for labels, _ in totals)

    buckets = samples["http_request_duration_seconds_bucket"]
    assert any(
        labels.get("route") == route and labels.get("le") == "+Inf" and v == 3
        for labels, v in buckets
    )
    assert samples["websocket_connections_active"] == [({}, 0.0)]
