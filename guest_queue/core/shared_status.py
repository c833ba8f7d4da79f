"""``queue/status`` for a queue shared by several processes: theirs added to ours."""

from __future__ import annotations

from typing import Any

#: Figures that add up across processes.
SUMMED = (
    "total_requests",
    "completed_requests",
    "failed_requests",
    "timeout_requests",
    "cancelled_requests",
    "rejected_requests",
    "cache_hits",
)
#: Averages, weighted by how many requests each process has finished.
AVERAGED = ("avg_wait_ms", "avg_processing_ms")
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
        weighted = [
            (p[key], p.get("completed_requests") or 1) for p in everyone if p.get(key) is not None
        ]
        total = sum(w for _, w in weighted)
        merged[key] = round(sum(v * w for v, w in weighted) / total, 1) if weighted else None
    merged["queue_size"] = shared["queue_size"] + sum(p.get("following", 0) for p in everyone)
    merged["active_requests"] = shared["active_requests"] + sum(
        p.get("replaying", 0) for p in everyone
    )
    merged.update(backend=backend, queue_reachable=True, processes=len(everyone))
    merged["process"] = process
    return merged
