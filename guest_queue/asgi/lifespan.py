"""ASGI lifespan: start the queue at server start-up, drain it at shutdown.

uvicorn waits for open connections to close *before* it sends
``lifespan.shutdown``, and a queued stream never closes by itself, so the drain
also starts when the process receives SIGTERM or SIGINT: the handler the server
installed is kept and called after ours. Servers that send no lifespan events
(daphne, ``runserver``) get a manager started lazily by the first request.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

from ..runtime import Misconfigured, get_manager

logger = logging.getLogger("guest_queue")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Django's, channels' and servers' own ASGI signatures differ in detail.
ASGIApp = Callable[..., Awaitable[None]]

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalDrain:
    """Chains a drain-starting handler in front of the server's own signal handlers."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._drain: Callable[[], None] | None = None

    def install(self, drain: Callable[[], None]) -> None:
        # Taken now, not looked up in the handler: a signal may interrupt code holding locks.
        self._drain = drain
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in DRAIN_SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._drain is not None:
            self._drain()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)


async def startup() -> None:
    """Start this process's queue manager on the running loop."""
    get_manager().start()


async def shutdown() -> None:
    """Drain the queue manager and stop its tasks."""
    await get_manager().close()


class LifespanHandler:
    """An ASGI app for the ``lifespan`` scope, in the manner of Starlette's."""

    def __init__(self) -> None:
        self._signals = SignalDrain()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The server prints the message it gets: logging it too would print it twice.
                try:
                    await startup()
                    self._signals.install(get_manager().begin_drain)
                except Misconfigured as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception:
                    await send(
                        {"type": "lifespan.startup.failed", "message": traceback.format_exc()}
                    )
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await shutdown()
                except Exception:
                    logger.exception("guest_queue failed to shut down cleanly")
                    await send(
                        {"type": "lifespan.shutdown.failed", "message": traceback.format_exc()}
                    )
                    return
                finally:
                    self._signals.uninstall()
                await send({"type": "lifespan.shutdown.complete"})
                return


def with_lifespan(app: ASGIApp) -> ASGIApp:
    """Wrap a plain ASGI app (no channels) so ``lifespan`` reaches guest_queue."""
    lifespan = LifespanHandler()

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
        else:
            await app(scope, receive, send)

    return router
