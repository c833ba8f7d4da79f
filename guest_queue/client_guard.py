"""Moved to ``guest_queue.asgi.client_guard``: this old name is read until the next release."""

import warnings

from .asgi.client_guard import ClientCapGuard

__all__ = ["ClientCapGuard"]

warnings.warn(
    "guest_queue.client_guard moved to guest_queue.asgi.client_guard; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
