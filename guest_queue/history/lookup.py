"""Finding a finished request in the history table, isolated from the request threads.

Guest requests share a few sync threads (``asgi.SharedSyncThreads``). A lookup
run there on a database that hangs would hold one of them, and with it every
chat request that needs it. Lookups run on their own daemon threads instead,
at most ``LOOKUP_THREADS`` at once and each for at most ``LOOKUP_TIMEOUT_SEC``:
beyond that, ``HistoryUnavailable``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.db import connections

from .threads import in_daemon_thread

#: Lookups in progress at most; a thread stuck on a hung database counts until it returns.
LOOKUP_THREADS = 4
#: Longest a lookup waits for the history table before ``503 history_unavailable``.
LOOKUP_TIMEOUT_SEC = 2.0

_slots = threading.BoundedSemaphore(LOOKUP_THREADS)


class HistoryUnavailable(Exception):
    """The history table cannot be read now (down, hanging, or every lookup thread busy)."""


def _lookup(database: str, request_id: str) -> dict[str, Any] | None:
    from ..models import GuestRequest

    try:
        row = GuestRequest.objects.using(database).filter(request_id=request_id).first()
        return row.as_status() if row is not None else None
    finally:
        try:
            connections[database].close()
        finally:
            _slots.release()


async def find_in_history(database: str, request_id: str) -> dict[str, Any] | None:
    """The stored status of a finished request, None if unknown; ``HistoryUnavailable``."""
    if not _slots.acquire(blocking=False):
        raise HistoryUnavailable("every history lookup thread is busy")
    try:
        thread = in_daemon_thread(lambda: _lookup(database, request_id), "guest-queue-lookup")
    except BaseException:
        _slots.release()
        raise
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_SEC):
            return await thread
    except TimeoutError as exc:
        raise HistoryUnavailable("the history lookup timed out") from exc
    except Exception as exc:
        raise HistoryUnavailable(str(exc)) from exc
