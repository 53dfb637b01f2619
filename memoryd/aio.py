"""Small asyncio helpers shared by the server's and the handlers' background loops."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True when it was set.

    `asyncio.timeout`, not `asyncio.wait_for`: Python 3.11's wait_for returns normally
    when its wait ends and its task is cancelled in the same loop step, so a background
    loop that waits with it can lose the cancel of its ``stop()`` and run forever (an app
    shutdown hung on the embed sweeper that way in CI).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
