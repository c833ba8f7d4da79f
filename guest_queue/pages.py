"""Moved to ``guest_queue.http.pages``: this old name is read until the next release."""

import warnings

from .http.pages import ChatPage

__all__ = ["ChatPage"]

warnings.warn(
    "guest_queue.pages moved to guest_queue.http.pages; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
