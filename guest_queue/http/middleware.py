"""Middleware for the guest API's lean lane (``GUEST_API_MIDDLEWARE``).

Both run on the event loop: ``MiddlewareMixin`` would run their hooks through
``sync_to_async`` (a thread hop each way), but they only read settings and the
request and set headers (no I/O, no database), so that hop buys nothing.
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware.security import SecurityMiddleware
from django.utils.deprecation import MiddlewareMixin

from .responses import json_error


class APISecurityMiddleware(SecurityMiddleware):
    """Django's ``SecurityMiddleware`` (the site's ``SECURE_*`` settings) plus ``ALLOWED_HOSTS``.

    Sets ``X-Content-Type-Options``, ``Referrer-Policy``,
    ``Cross-Origin-Opener-Policy`` and HSTS, redirects to HTTPS when the site
    says so, and refuses a ``Host`` outside ``ALLOWED_HOSTS`` with a 400, as the
    site's ``CommonMiddleware`` would (Django's guard against DNS rebinding and
    poisoned absolute URLs) — but as the API's JSON error ``bad_host``, not
    Django's HTML page.
    """

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            request.get_host()
        except DisallowedHost:
            return json_error(
                400, "bad_host", "The Host header names a host this site does not serve."
            )
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]
        return self.process_response(request, response)


class ContentLengthMiddleware(MiddlewareMixin):
    """``Content-Length`` on whole (non-streaming) responses, as ``CommonMiddleware`` sets it.

    Without it the server sends JSON answers chunked.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]
        return self.process_response(request, response)
