"""Load tests (locust) and the asyncio benchmark harness; see docs/benchmarks.md."""
