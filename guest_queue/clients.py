"""Moved to ``guest_queue.guests.clients``: this old name is read until the next release."""

import warnings

from .guests.clients import address_key, client_id, client_key

__all__ = ["address_key", "client_id", "client_key"]

warnings.warn(
    "guest_queue.clients moved to guest_queue.guests.clients; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
