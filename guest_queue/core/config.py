"""The queue's tunables as a plain value, built by the Django layer from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT_FALLBACK = (
    "Sorry, this answer is taking longer than expected. Please try again in a moment."
)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    #: Answers at once: the fixed limit, or with ``adaptive`` the ceiling of the limit in use.
    max_concurrent: int = 3
    #: Adapt the limit in use between ``concurrency_floor`` and ``max_concurrent``
    #: (``GUEST_MAX_CONCURRENT_REQUESTS = "auto"``; ``concurrency.LimitController``).
    adaptive: bool = False
    concurrency_floor: int = 1
    max_queue_size: int = 50
    #: Requests one client may have open at once (waiting, processing, following); 0: no cap.
    max_per_client: int = 3
    request_timeout_sec: float = 60.0
    max_queue_wait_sec: float | None = None
    heartbeat_sec: float = 15.0
    history_limit: int = 100
    shutdown_grace_sec: float = 30.0
    #: Position updates are coalesced to one pass per interval (not a setting: tests tune it).
    position_update_interval_sec: float = 0.25
    availability_cache_sec: float = 5.0
    #: A ticket whose stream has not started this long after admission is released.
    unclaimed_ticket_sec: float = 30.0
    timeout_fallback: str = DEFAULT_TIMEOUT_FALLBACK
    #: Token-set similarity at which a question counts as already answered; None: exact only.
    cache_similarity: float | None = None
    #: How long a resumable request outlives its last reader, and its log its terminal event.
    resume_grace_sec: float = 20.0
    #: Caps on one resumable request's event log (events, and bytes of their text); the
    #: event cap is no setting: the bytes bound the memory, it only stops a flood of tiny events.
    resume_log_max_events: int = 2000
    resume_log_max_bytes: int = 1_048_576
    #: Where the queue lives: the dotted path of an ``Admission`` subclass, or a short
    #: name (``backends.SHORT_NAMES``): "local" (this process), "redis" (every process).
    backend: str = "local"
    #: Options only the backend reads (the Redis backend: ``RedisOptions``' fields).
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    #: Admission tiers: name -> weight (0: strictly after every positive weight); requests
    #: of a tier not named here are ordered as "guest" (``ordering``).
    tiers: Mapping[str, float] = field(default_factory=lambda: {"guest": 1})
    #: "fifo": first come, first served within a tier; "fair": by each client's recent use.
    fairness: str = "fifo"
    #: Half-life of a client's charged use under "fair" (not a setting: tests tune it).
    fair_half_life_sec: float = 60.0


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """A bad option a backend or a workflow reports; the app turns it into a system check."""

    id: str
    message: str
    hint: str = ""


def int_at_least(low: int) -> Callable[[Any], bool]:
    """A setting rule: an integer (not a bool) of at least ``low``."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def number(low: float, high: float | None = None, *, strict: bool = False) -> Callable[[Any], bool]:
    """A setting rule: a number (not a bool) from ``low`` (or above it, ``strict``) to ``high``."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        above = v > low if strict else v >= low
        return above and (high is None or v <= high)

    return ok
