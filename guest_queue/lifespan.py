"""Moved to ``guest_queue.asgi.lifespan``: this old name is read until the next release."""

import warnings

from .asgi.lifespan import LifespanHandler, with_lifespan

__all__ = ["LifespanHandler", "with_lifespan"]

warnings.warn(
    "guest_queue.lifespan moved to guest_queue.asgi.lifespan; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
