"""Blocking calls on daemon threads: a thread stuck on a hung database never holds up exit.

``ThreadPoolExecutor`` joins its threads when the interpreter exits, so one call
stuck on a database that accepts connections and never answers would keep a
stopped server alive for ever. These threads are daemons, one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():  # cancelled by a timeout meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def in_daemon_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run ``call`` on a new daemon thread; its result arrives on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = call()
        except BaseException as exc:
            error = exc
        # A closed loop raises RuntimeError: nobody waits for the result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return future
