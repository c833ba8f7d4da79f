"""The guest API's lean lane: its own middleware list instead of the site's whole stack.

The guest API is anonymous, cookie-free JSON and SSE: sessions, auth, messages,
CSRF and locale do nothing for it, yet under ASGI each ``MiddlewareMixin`` class
of the site costs it two thread hops per request (half its throughput with
a typical site's eight). ``GuestAPILane`` wraps the site's ASGI app and serves paths
under the API's prefix through a Django handler of its own whose middleware is
``GUEST_API_MIDDLEWARE``; every other path goes to the site's app unchanged.
The request cycle is otherwise Django's own (URL resolution, exception
handling, the ``request_started``/``request_finished`` signals that clean up
database connections), except that those signals go out without a thread hop
when that changes nothing (see ``request_signals``).
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.dispatch import Signal
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.utils.module_loading import import_string

from ..conf import app_settings
from .lane_cycle import matching_copy
from .lifespan import ASGIApp, Receive, Scope, Send
from .request_signals import inline_safe, track_connections


class GuestAPIHandler(ASGIHandler):
    """Django's ASGI handler with ``GUEST_API_MIDDLEWARE`` as its middleware."""

    def __init__(self) -> None:
        track_connections()
        self._handle = matching_copy()
        super().__init__()

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        if self._handle is None:
            await super().handle(scope, receive, send)
        else:
            await self._handle(self, scope, receive, send)

    async def send_signal(self, signal: Signal, **kwargs: Any) -> None:
        """Send a request signal: inline when that is safe, else as Django does."""
        if inline_safe(signal, self.__class__):
            signal.send(sender=self.__class__, **kwargs)
        else:
            await signal.asend(sender=self.__class__, **kwargs)

    async def close_response(self, response: HttpResponseBase) -> None:
        """Close the response (which sends ``request_finished``): inline when that is safe."""
        if inline_safe(signals.request_finished, self.__class__):
            response.close()
        else:
            await sync_to_async(response.close)()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware, reading GUEST_API_MIDDLEWARE instead of MIDDLEWARE.
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        # django-stubs does not declare BaseHandler's _get_response methods.
        get_response = self._get_response_async if is_async else self._get_response  # type: ignore[attr-defined]
        handler: Any = convert_exception_to_response(get_response)
        handler_is_async = is_async
        for path in reversed(list(app_settings.API_MIDDLEWARE)):
            middleware = import_string(path)
            can_sync = getattr(middleware, "sync_capable", True)
            can_async = getattr(middleware, "async_capable", False)
            if not can_sync and not can_async:
                raise RuntimeError(f"Middleware {path} must be sync_capable or async_capable.")
            is_async_mw = can_async if (handler_is_async or not can_sync) else False
            adapted = self.adapt_method_mode(
                is_async_mw, handler, handler_is_async, name=f"middleware {path}"
            )
            try:
                instance = middleware(adapted)
            except MiddlewareNotUsed:
                continue
            if instance is None:
                raise ImproperlyConfigured(f"Middleware factory {path} returned None.")
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(
                    0, self.adapt_method_mode(is_async, instance.process_view)
                )
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(is_async, instance.process_template_response)
                )
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(
                    self.adapt_method_mode(False, instance.process_exception)
                )
            handler = convert_exception_to_response(instance)
            handler_is_async = is_async_mw
        self._middleware_chain = self.adapt_method_mode(is_async, handler, handler_is_async)


class GuestAPILane:
    """Serve the guest API through ``GUEST_API_MIDDLEWARE``, every other path through ``app``.

    Wrap the site's Django app with it *inside* ``SharedSyncThreads``, so that
    the API's requests still share its threads::

        SharedSyncThreads(GuestAPILane(get_asgi_application()))
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Built now, as Django builds its own handler: a bad GUEST_API_MIDDLEWARE
        # fails at start-up, not on a guest's request.
        self.handler: ASGIApp = GuestAPIHandler()
        self._prefix: str | None = None

    def _api_prefix(self) -> str:
        if self._prefix is None:
            chat = reverse("guest_queue:chat")
            self._prefix = chat[: -len("chat")]
        return self._prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._api_prefix()):
            await self.handler(scope, receive, send)
        else:
            await self.app(scope, receive, send)
