"""Middleware for the guest API's lean lane (``GUEST_API_MIDDLEWARE``)."""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware.security import SecurityMiddleware


class APISecurityMiddleware(SecurityMiddleware):
    """Django's ``SecurityMiddleware`` (the site's ``SECURE_*`` settings), run inline.

    Under ASGI, ``MiddlewareMixin`` runs ``process_request`` and
    ``process_response`` through ``sync_to_async``: a thread hop each way. These
    two only read settings and set headers (no I/O, no database), so on the
    event loop they are safe and cost microseconds instead of two hops.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]
        return self.process_response(request, response)
