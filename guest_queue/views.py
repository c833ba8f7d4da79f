"""Moved to ``guest_queue.http.views``: this old name is read until the next release."""

import warnings

from .http.views import (
    chat,
    chat_simple,
    health,
    health_live,
    metrics_endpoint,
    not_found,
    openapi,
    queue_status,
    request_status,
)

__all__ = [
    "chat",
    "chat_simple",
    "health",
    "health_live",
    "metrics_endpoint",
    "not_found",
    "openapi",
    "queue_status",
    "request_status",
]

warnings.warn(
    "guest_queue.views moved to guest_queue.http.views; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
