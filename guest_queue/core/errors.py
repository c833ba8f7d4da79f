"""Reasons the queue refuses a request before its stream starts."""

from __future__ import annotations

from .events import CODE_UNAVAILABLE


class Refused(Exception):
    """A request was not accepted; ``retry_after`` is a hint in whole seconds."""

    code = "refused"
    status_code = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QueueFull(Refused):
    code = "queue_full"
    status_code = 429


class ClientLimited(Refused):
    """The client already has as many requests open as it may."""

    code = "client_limit"
    status_code = 429


class RateLimited(Refused):
    """The client asked more often than the rate limit allows."""

    code = "rate_limited"
    status_code = 429


class WaitTooLong(Refused):
    """The predicted wait in line exceeds the longest the request accepts."""

    code = "wait_too_long"
    status_code = 429


class NotAccepting(Refused):
    code = "shutting_down"
    status_code = 503


class Unavailable(Refused):
    """The workflow's service, or the shared queue, cannot be reached."""

    code = CODE_UNAVAILABLE
    status_code = 503
