"""ASGI for sites that serve guest_queue: ``application(app)``, the one-line mount.

``application`` composes what the API needs in front of the site's app (see its
docstring); the parts below are what it composes.

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

import gc
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from asgiref.sync import ThreadSensitiveContext
from django.apps import apps
from django.urls import reverse

from ..conf import app_settings
from ..runtime.unstarted import release_unstarted, stop_noting, taken_here
from .body_limit import read_within_limit
from .lifespan import ASGIApp, Receive, Scope, Send


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
            taken, token = taken_here()
            try:
                async with ThreadSensitiveContext(executor=executor):
                    await self.app(scope, receive, send)
            finally:
                stop_noting(token)
                release_unstarted(taken)
                # Django's request cycle keeps copies of this context alive until the
                # garbage collector frees them; the tickets need not wait for it.
                taken.clear()
        else:
            await self.app(scope, receive, send)


def application(app: ASGIApp) -> ASGIApp:
    """Mount guest_queue in front of the site's ASGI app: the one call a site's ``asgi.py`` makes.

    ::

        application = guest_queue.asgi.application(get_asgi_application())

    The result serves every ASGI protocol the server sends:

    - ``lifespan``: the queue starts with the server and drains at its shutdown
      (``LifespanHandler``);
    - ``http`` under the API's prefix, outermost first: a client already at its cap
      is refused before anything else runs (``ClientCapGuard``, inactive when
      ``GUEST_MAX_REQUESTS_PER_CLIENT`` is 0 or the cap is counted elsewhere); the
      body is limited to ``GUEST_MAX_BODY_BYTES`` before Django reads it and the
      request shares ``GUEST_SYNC_THREADS`` threads (``SharedSyncThreads``); it runs
      through ``GUEST_API_MIDDLEWARE``, not the site's whole ``MIDDLEWARE``
      (``GuestAPILane``; set it to ``MIDDLEWARE`` for the site's stack);
    - every other ``http`` path and every other protocol (``websocket`` under a
      channels router, say): ``app``, untouched. With ``DEBUG`` on and
      ``django.contrib.staticfiles`` installed, static files are served as
      ``runserver`` serves them (in production, ServeStatic or the proxy does).

    ``app`` is Django's ASGI app or anything wrapping it (a channels
    ``ProtocolTypeRouter``). Call it once, after ``get_asgi_application()``: what is
    loaded by then lives as long as the process and is moved out of the garbage
    collector's sight (``gc.freeze``), which keeps its full passes short.
    """
    from django.conf import settings

    from .client_guard import ClientCapGuard
    from .lane import GuestAPILane
    from .lifespan import LifespanHandler

    site = app
    if settings.DEBUG and apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        # Typed for Django's handler, it serves any ASGI app (it only reads STATIC_URL paths).
        site = ASGIStaticFilesHandler(cast(Any, site))
    http = ClientCapGuard(SharedSyncThreads(GuestAPILane(site)))
    lifespan = LifespanHandler()

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
        else:
            await app(scope, receive, send)

    gc.collect()
    gc.freeze()
    return mounted
