"""Middleware that marks the responses it sees, for the lean-lane tests."""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin


class SiteMark(MiddlewareMixin):
    """A site middleware of the usual (sync, MiddlewareMixin) kind."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response["X-Site-Mark"] = "1"
        return response


class APIMark(MiddlewareMixin):
    """A middleware the site adds to GUEST_API_MIDDLEWARE."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        response["X-API-Mark"] = "1"
        return response
