"""Background loops that must not die silently: logged and restarted whenever they end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("guest_queue")

#: Pause before a loop that failed is started again (a loop failing at once must not spin).
RESTART_DELAY_SEC = 0.5


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run()`` until cancelled; log and restart it whenever it raises or returns."""
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled, but a library turned the CancelledError into another error
                # (a Redis client's connection error, say): stop, do not restart.
                raise asyncio.CancelledError from None
            logger.exception("Background task %r died; restarting it", name)
        else:
            logger.error("Background task %r stopped by itself; restarting it", name)
        await asyncio.sleep(RESTART_DELAY_SEC)
