"""Start-up and shutdown: each resource has its own cleanup context (issue 12.5).

A start-up that fails half-way, and a shutdown whose one stop() raises, leave no pool,
HTTP session or background task of the node open. The check is on the real objects the
app made, read back from its keys.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from memoryd.config import Settings
from memoryd.errors import ConfigError
from memoryd.server import app as app_module
from memoryd.server.acks import AckWriter
from memoryd.server.app import create_app
from memoryd.server.jobs import JobRunner
from memoryd.server.keys import DATABASE, HTTP_SESSION

pytestmark = pytest.mark.storage

REDIS_URL = "redis://127.0.0.1:6379/15"


def _our_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks running memoryd code started since ``before`` (other servers of the test run
    share the loop; their ``wait_for`` helper tasks run asyncio's code, not ours, and a
    job one of their runners takes meanwhile is theirs, not this app's)."""
    return {
        t
        for t in asyncio.all_tasks()
        if t not in before
        and not t.done()
        and "/memoryd/" in _code_file(t)
        and not _another_runners(t)
    }


def _another_runners(task: asyncio.Task[Any]) -> bool:
    """A job (or its lease keep-alive) of a runner started before this test: the shared
    servers' runners run jobs on the shared database whenever one is queued."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    owner = frame.f_locals.get("self") if frame is not None else None
    return isinstance(owner, JobRunner) and owner in _RUNNERS_BEFORE


_RUNNERS_BEFORE: set[JobRunner] = set()


@pytest.fixture(autouse=True)
def _runners_before() -> Iterator[None]:
    """The job runners alive when the test starts (found through the garbage collector)."""
    _RUNNERS_BEFORE.clear()
    _RUNNERS_BEFORE.update(o for o in gc.get_objects() if type(o) is JobRunner)  # no proxies
    yield
    _RUNNERS_BEFORE.clear()


def _code_file(task: asyncio.Task[Any]) -> str:
    code = getattr(task.get_coro(), "cr_code", None)
    return code.co_filename if code is not None else ""


@pytest.fixture
def redis_settings(base_settings: Settings) -> Settings:
    """The machine's Redis, as tests/multinode uses it (a failure under CI=true if absent)."""
    url = os.environ.get("TEST_REDIS_URL") or REDIS_URL
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Redis at {url}: {exc} (CI=true: must not be skipped)")
        pytest.skip(f"no Redis at {url}: {exc}")
    finally:
        client.close()
    return base_settings.replace(redis_url=url)


async def test_a_bad_key_file_leaves_nothing_open(base_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    app = create_app(base_settings.replace(jwt_private_key_file=bad))
    before = set(asyncio.all_tasks())
    runner = web.AppRunner(app)
    with pytest.raises(ConfigError, match="cannot load the JWT signing key"):
        await runner.setup()
    await runner.cleanup()
    assert app[DATABASE].pool.is_closing()
    assert app[HTTP_SESSION].closed
    assert _our_tasks(before) == set()


async def test_a_provider_that_raises_stops_the_tasks_already_started(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: Settings) -> Any:
        raise RuntimeError("provider set-up failed")

    monkeypatch.setattr(app_module, "provider_for", broken)
    app = create_app(redis_settings)
    before = set(asyncio.all_tasks())
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match="provider set-up failed"):
        await runner.setup()
    started = _our_tasks(before)
    assert {t.get_name() for t in started} >= {"fanout-listen", "fanout-poll"}  # were running
    await runner.cleanup()
    assert app[DATABASE].pool.is_closing()
    assert app[HTTP_SESSION].closed
    assert _our_tasks(before) == set()
    assert all(t.done() for t in started)


async def test_one_failing_stop_does_not_skip_the_others(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_stop(self: AckWriter) -> None:
        raise RuntimeError("ack writer could not stop")

    monkeypatch.setattr(AckWriter, "stop", failing_stop)
    app = create_app(redis_settings)
    before = set(asyncio.all_tasks())
    runner = web.AppRunner(app)
    await runner.setup()
    with pytest.raises(RuntimeError, match="ack writer could not stop"):
        await runner.cleanup()
    # Everything opened before the ack writer (pool, session, Redis, fan-out) and after it
    # (pruner, jobs) was still stopped. The ack writer's own task is the one left running.
    assert app[DATABASE].pool.is_closing()
    assert app[HTTP_SESSION].closed
    left = _our_tasks(before)
    assert {t.get_name() for t in left} == {"memoryd-ack-writer"}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
