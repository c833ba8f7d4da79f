"""Moved to ``guest_queue.http.middleware``: this old name is read until the next release."""

import warnings

from .http.middleware import APISecurityMiddleware, ContentLengthMiddleware

__all__ = ["APISecurityMiddleware", "ContentLengthMiddleware"]

warnings.warn(
    "guest_queue.middleware moved to guest_queue.http.middleware; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
