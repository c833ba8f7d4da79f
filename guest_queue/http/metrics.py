"""The ``metrics`` endpoint: Prometheus text, behind ``GUEST_METRICS_TOKEN`` when one is set."""

from __future__ import annotations

import hmac
import logging

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..conf import app_settings
from ..core.manager import QueueManager
from ..observe.metrics import enabled, exposition
from .responses import json_error

logger = logging.getLogger("guest_queue")


def authorized(request: HttpRequest) -> bool:
    """Whether the request carries the configured bearer token (or none is needed)."""
    token = app_settings.METRICS_TOKEN
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), str(token).encode())


_reported_missing = False


async def metrics_view(request: HttpRequest, manager: QueueManager) -> HttpResponseBase:
    """The ``metrics`` endpoint's answer (the view in ``views`` checks the method)."""
    global _reported_missing
    if not enabled():
        if app_settings.METRICS_ENABLED is True and not _reported_missing:
            _reported_missing = True
            logger.error(
                "GUEST_METRICS_ENABLED is on but prometheus_client is not installed: "
                'install "django-guest-queue[prometheus]".'
            )
        return json_error(404, "not_found", "No such endpoint.")
    if not authorized(request):
        response = json_error(401, "unauthorized", "A valid bearer token is required.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST  # installed: enabled() said so

    body = await exposition(manager)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
