"""ASGI helpers for sites that serve guest_queue.

Django runs each ASGI request in its own ``ThreadSensitiveContext``: the first
sync step of a request (the ``request_started`` receivers, any sync middleware)
starts a thread that then stays parked until the response ends. For a stream
that waits minutes in the queue, that is one idle OS thread per waiting guest.
``SharedSyncThreads`` gives the guest API's requests a context backed by a small
pool of long-lived single-thread executors instead (asgiref's documented
``ThreadSensitiveContext(executor=...)``), so thousands of waiting guests cost
no threads at all. Other paths keep Django's per-request threads.

It also enforces ``GUEST_MAX_BODY_BYTES`` on the API's requests before Django
reads their bodies (see ``body_limit``): installing this wrapper in the site's
``asgi.py`` is what spares the server a 1 GiB upload.

It also frees the places of clients that leave before their response starts.
When the client disconnects while the response middleware runs, Django cancels
the request and drops the response unclosed: neither the stream's ``finally``
nor ``close()`` runs. Every ticket a request takes is noted here and released
when the request's ASGI call ends without its stream having started.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

from asgiref.sync import ThreadSensitiveContext
from django.urls import reverse

from .body_limit import read_within_limit
from .conf import app_settings
from .core.backends.base import Ticket
from .core.manager import QueueManager
from .lifespan import ASGIApp, Receive, Scope, Send

#: The tickets the current ASGI request took, for release if its stream never starts.
_taken: ContextVar[list[tuple[QueueManager, Ticket]] | None] = ContextVar(
    "guest_queue_taken", default=None
)


def note_ticket(manager: QueueManager, ticket: Ticket) -> None:
    """Release ``ticket`` when this ASGI request ends if its stream never started."""
    taken = _taken.get()
    if taken is not None:
        taken.append((manager, ticket))


def _release_unstarted(taken: list[tuple[QueueManager, Ticket]]) -> None:
    for manager, ticket in taken:
        if not ticket.claimed:
            manager.release(ticket)


class SharedSyncThreads:
    """Wrap Django's ASGI app so guest API requests share ``GUEST_SYNC_THREADS`` threads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._executors: list[ThreadPoolExecutor] = []
        self._turn = itertools.count()
        self._prefix: str | None = None

    def _api_prefix(self) -> str:
        if self._prefix is None:
            chat = reverse("guest_queue:chat")
            self._prefix = chat[: -len("chat")]
            self._executors = [
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="guest-queue-sync")
                for _ in range(app_settings.SYNC_THREADS)
            ]
        return self._prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._api_prefix()):
            # GUEST_MAX_BODY_BYTES before Django reads (and spools) the whole body.
            limited = await read_within_limit(scope, receive, send)
            if limited is None:
                return
            receive = limited
            # Each executor runs one call at a time on one thread, as asgiref requires;
            # a request keeps the same executor (and thread) from start to end.
            executor = self._executors[next(self._turn) % len(self._executors)]
            taken: list[tuple[QueueManager, Ticket]] = []
            token = _taken.set(taken)
            try:
                async with ThreadSensitiveContext(executor=executor):
                    await self.app(scope, receive, send)
            finally:
                _taken.reset(token)
                _release_unstarted(taken)
                # Django's request cycle keeps copies of this context alive until the
                # garbage collector frees them; the tickets need not wait for it.
                taken.clear()
        else:
            await self.app(scope, receive, send)
