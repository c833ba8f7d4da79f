"""Moved to ``guest_queue.guests.clients``: this old name is read until the next release."""

import warnings

from .guests.clients import ID_CHARS, address_key, client_id, client_key, id_of_key, key_of_address

__all__ = ["ID_CHARS", "address_key", "client_id", "client_key", "id_of_key", "key_of_address"]

warnings.warn(
    "guest_queue.clients moved to guest_queue.guests.clients; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
