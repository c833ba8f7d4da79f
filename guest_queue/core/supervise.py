"""Background loops that must not die silently: logged and restarted whenever they end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("guest_queue")

#: Pause before a loop that failed is started again (a loop failing at once must not spin).
RESTART_DELAY_SEC = 0.5


def stay_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop.

    A cancel is delivered once: a library that swallows it (redis-py can, when it arrives
    while a command is in flight) leaves the task running with ``cancelling()`` set, and a
    loop that goes on would never stop (a dead process's renewals would keep its slots).
    Loops call this after each such await.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run()`` until cancelled; log and restart it whenever it raises or returns."""
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Cancelled, but a library turned the CancelledError into another error
            # (a Redis client's connection error, say): stop, do not restart.
            stay_cancelled()
            logger.exception("Background task %r died; restarting it", name)
        else:
            logger.error("Background task %r stopped by itself; restarting it", name)
        await asyncio.sleep(RESTART_DELAY_SEC)
