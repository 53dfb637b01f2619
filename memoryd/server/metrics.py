"""Prometheus metrics, one registry per application (so tests can run several apps)."""

from __future__ import annotations

import gc
import time
from typing import Any

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
        self.ws_frames_in = Counter(
            "websocket_frames_in_total", "Client frames received, by type", ["type"], registry=r
        )
        self.ws_frames_out = Counter(
            "websocket_frames_out_total", "Server frames sent, by type", ["type"], registry=r
        )
        self._frames_out: dict[str, Any] = {}
        self._frames_in: dict[str, Any] = {}
        self.send_stage = Histogram(
            "memoryd_send_stage_seconds",
            "Time a durable message.send spends in each stage: decode (the frame), "
            "pool_acquire, statement (the one-statement send, commit included), statements "
            "and commit (the transaction path), publish (hand the event to the hub and "
            "peers), reply (encode and queue the reply frame)",
            ["stage"],
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                     0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )  # fmt: skip
        self._send_stages: dict[str, Any] = {}
        self.gc_pause = Histogram(
            "memoryd_gc_pause_seconds",
            "Garbage-collector pauses of this process, by generation (every collection "
            "stops the event loop, so each pause lands in the latency of what was waiting)",
            ["generation"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1),
            registry=r,
        )  # fmt: skip
        self.ws_fanout_latency = Histogram(
            "websocket_fanout_latency_seconds",
            "Time from commit (publish) to the socket write of a live event",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.ws_queue_drops = Counter(
            "websocket_queue_drops_total",
            "Ephemeral signals dropped because a socket's queue was filling",
            registry=r,
        )
        self.ws_slow_consumer_closes = Counter(
            "websocket_slow_consumer_closes_total",
            "Sockets closed with 4009 because their outbound queue overflowed",
            registry=r,
        )
        self.ws_replayed_events = Counter(
            "websocket_replayed_events_total", "Events sent from the log (resume, gaps)", registry=r
        )
        self.redis_up = Gauge(
            "redis_fanout_up", "1 while the Redis fan-out is connected, else 0", registry=r
        )
        self.redis_messages_published = Counter(
            "redis_messages_published_total", "Fan-out messages published to Redis", registry=r
        )
        self.redis_messages_received = Counter(
            "redis_messages_received_total",
            "Fan-out messages from other nodes received and decoded",
            registry=r,
        )
        self.redis_publish_dropped = Counter(
            "redis_publish_dropped_total",
            "Fan-out messages not published (Redis down or slow); the log poller covers them",
            registry=r,
        )
        self.rate_limited_total = Counter(
            "rate_limited_total", "Requests refused by a rate limit", ["limit"], registry=r
        )

    def frames_in(self, frame_type: str) -> Any:
        """``ws_frames_in`` for one frame type, looked up once (see `frames_out`)."""
        child = self._frames_in.get(frame_type)
        if child is None:
            child = self._frames_in[frame_type] = self.ws_frames_in.labels(frame_type)
        return child

    def observe_send_stage(self, stage: str, seconds: float) -> None:
        """One stage of a send (`send_stage`): the label child is looked up once, so
        leaving this on costs about a microsecond a stage."""
        child = self._send_stages.get(stage)
        if child is None:
            child = self._send_stages[stage] = self.send_stage.labels(stage)
        child.observe(seconds)

    def time_gc(self) -> GcTiming:
        """Observe every GC pause in `gc_pause` until ``stop()`` (one callback, a few
        hundred nanoseconds per collection)."""
        return GcTiming(self.gc_pause)

    def frames_out(self, frame_type: str) -> Any:
        """``ws_frames_out`` for one frame type, looked up once: on the fan-out path,
        ``labels()`` cost more than the increment itself."""
        child = self._frames_out.get(frame_type)
        if child is None:
            child = self._frames_out[frame_type] = self.ws_frames_out.labels(frame_type)
        return child


class GcTiming:
    def __init__(self, histogram: Histogram) -> None:
        self._children = [histogram.labels(str(g)) for g in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)
            self._started = 0.0

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
