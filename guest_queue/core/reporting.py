"""What the queue reports: ``queue/status`` figures (this process's or the whole
shared queue's) and what it knows of one request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backends.base import Admission
from .config import QueueConfig
from .live import LiveTickets
from .records import RecentRequests, Status
from .stats import QueueStats

#: Figures that add up across processes.
SUMMED = (
    "total_requests",
    "completed_requests",
    "failed_requests",
    "timeout_requests",
    "cancelled_requests",
    "rejected_requests",
    "rejected_queue_full",
    "rejected_client_limit",
    "rejected_rate_limited",
    "rejected_wait_too_long",
    "cache_hits",
)
#: Refusal codes counted on their own in ``queue/status`` (as ``rejected_<code>``).
REJECTION_CODES = ("queue_full", "client_limit", "rate_limited", "wait_too_long")
#: Averages, weighted by how many requests each process has finished.
AVERAGED = ("avg_wait_ms", "avg_processing_ms")
#: Seconds averaged the same way, to two decimals (each process's median of its own).
AVERAGED_SEC = ("estimated_wait_error_p50_sec",)
#: Kept only in this process's own part: not part of the shared figures.
PRIVATE = ("following", "replaying")


def merge_status(own: dict[str, Any], shared: dict[str, Any], backend: str) -> dict[str, Any]:
    """The whole queue's figures, with this process's own under ``process``.

    ``shared`` holds the shared line and slots (``queue_size``, ``active_requests``)
    and ``others``: the figures every other live process last published (within
    a third of the lease). Requests that never entered the shared line (cache
    replays, followers of an identical question) are added from each process.
    """
    process = {k: v for k, v in own.items() if k not in PRIVATE}
    if not shared.get("reachable"):
        return {**process, "backend": backend, "queue_reachable": False, "process": process}
    everyone = [own, *shared["others"]]
    merged = dict(process)
    for key in SUMMED:
        merged[key] = sum(int(p.get(key) or 0) for p in everyone)
    for key in AVERAGED:
        merged[key] = _weighted(everyone, key, 1)
    for key in AVERAGED_SEC:
        merged[key] = _weighted(everyone, key, 2)
    merged["queue_size"] = shared["queue_size"] + sum(p.get("following", 0) for p in everyone)
    merged["active_requests"] = shared["active_requests"] + sum(
        p.get("replaying", 0) for p in everyone
    )
    merged.update(backend=backend, queue_reachable=True, processes=len(everyone))
    merged["process"] = process
    return merged


def _weighted(everyone: list[dict[str, Any]], key: str, digits: int) -> float | None:
    """``key``'s figures averaged over the processes, weighted by the requests each finished."""
    weighted = [
        (p[key], p.get("completed_requests") or 1) for p in everyone if p.get(key) is not None
    ]
    total = sum(w for _, w in weighted)
    return round(sum(v * w for v, w in weighted) / total, digits) if weighted else None


class QueueReporter:
    """Read-only views of a queue's state: its figures and what it knows of a request."""

    def __init__(
        self,
        config: QueueConfig,
        admission: Admission,
        stats: QueueStats,
        recent: RecentRequests,
        live: LiveTickets,
        accepting: Callable[[], bool],
    ) -> None:
        self.config = config
        self.admission = admission
        self.stats = stats
        self.recent = recent
        self.live = live
        self._accepting = accepting

    def status(self) -> dict[str, Any]:
        """The ``queue/status`` figures; they always add up to ``total_requests``."""
        stats, finished = self.stats, self.stats.finished
        wait, proc = stats.wait_ms.value, stats.processing_ms.value
        following, replaying = self.live.detached_counts()
        return {
            "queue_size": len(self.admission.waiting) + following,
            # A finished ticket keeps its slot until its workflow has stopped: not counted.
            "active_requests": replaying
            + sum(1 for t in self.admission.active.values() if not t.record.status.is_terminal),
            # The limit in use: it moves with GUEST_MAX_CONCURRENT_REQUESTS = "auto" or
            # while the upstream is overloaded.
            "max_concurrent_requests": self.admission.max_active,
            "concurrency": self.admission.concurrency(),
            "max_queue_size": self.config.max_queue_size,
            "request_timeout_sec": self.config.request_timeout_sec,
            "total_requests": stats.total,
            "completed_requests": finished[Status.COMPLETED],
            "failed_requests": finished[Status.FAILED],
            "timeout_requests": finished[Status.TIMEOUT],
            "cancelled_requests": finished[Status.CANCELLED],
            "rejected_requests": stats.rejected,
            **{f"rejected_{c}": stats.rejected_by_code.get(c, 0) for c in REJECTION_CODES},
            "max_requests_per_client": self.config.max_per_client,
            "cache_hits": stats.cache_hits,
            "avg_wait_ms": None if wait is None else round(wait, 1),
            "avg_processing_ms": None if proc is None else round(proc, 1),
            "estimated_wait_error_p50_sec": stats.estimate_errors.median_abs(),
            "accepting": self._accepting(),
            "uptime_sec": stats.uptime_sec,
        }

    def snapshot(self) -> dict[str, Any]:
        """This process's figures, as the other processes sharing the queue read them."""
        following, replaying = self.live.detached_counts()
        return {**self.status(), "following": following, "replaying": replaying}

    async def shared_status(self) -> dict[str, Any]:
        """The ``queue/status`` figures of the whole queue, however many processes share it."""
        shared = await self.admission.shared_status()
        if shared is None:
            return {**self.status(), "backend": self.admission.name}
        return merge_status(self.snapshot(), shared, self.admission.name)

    async def find(self, request_id: str) -> dict[str, Any] | None:
        """``lookup``, else a request live in another process sharing the queue."""
        return self.lookup(request_id) or await self.admission.locate(request_id)

    def lookup(self, request_id: str) -> dict[str, Any] | None:
        """What the queue remembers of a request: live, else among the recent ones."""
        ticket = self.live.get(request_id)
        if ticket is not None:
            data = ticket.record.as_dict()
            if not ticket.place.admitted:
                data["queue_position"] = ticket.position
            return data
        record = self.recent.get(request_id)
        return None if record is None else record.as_dict()
