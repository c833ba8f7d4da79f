"""Moved to ``guest_queue.asgi.lane``: this old name is read until the next release."""

import warnings

from .asgi.lane import GuestAPIHandler, GuestAPILane

__all__ = ["GuestAPIHandler", "GuestAPILane"]

warnings.warn(
    "guest_queue.lane moved to guest_queue.asgi.lane; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
