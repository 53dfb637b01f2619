"""The asyncio benchmark harness (uvloop): fan-out, idle cost, resume, storage anchor, peers.

Run ``python -m loadtests.bench --help`` from the repository root; ``make bench`` runs
everything. docs/benchmarks.md explains each benchmark and keeps the latest figures.
"""
