"""Moved to ``guest_queue.observe.metrics``: this old name is read until the next release."""

import warnings

from .observe.metrics import count_rejected

__all__ = ["count_rejected"]

warnings.warn(
    "guest_queue.metrics moved to guest_queue.observe.metrics; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
