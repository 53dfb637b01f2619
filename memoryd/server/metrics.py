"""Prometheus metrics, one registry per application (so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_request_duration = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["method", "route", "status_code"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 1, 3, 5, 7, 10),
            registry=r,
        )
        self.http_requests_total = Counter(
            "http_requests_total",
            "Total number of HTTP requests",
            ["method", "route", "status_code"],
            registry=r,
        )
        self.websocket_connections_active = Gauge(
            "websocket_connections_active", "Number of active WebSocket connections", registry=r
        )
        self.ai_requests_total = Counter(
            "ai_requests_total", "Total number of AI requests", ["model", "status"], registry=r
        )
        self.ai_request_duration = Histogram(
            "ai_request_duration_seconds",
            "Duration of AI requests in seconds",
            ["model"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.rate_limited_total = Counter(
            "rate_limited_total", "Requests refused by a rate limit", ["limit"], registry=r
        )
