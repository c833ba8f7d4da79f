"""``queue/status`` of a queue shared by several processes: how their figures combine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from guest_queue.core.answers.cache import CachedAnswer
from guest_queue.core.records import RequestRecord, iso
from guest_queue.core.reporting import merge_status

from .conftest import GateWorkflow, Stream, make_manager, until


def figures(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "queue_size": 0,
        "active_requests": 0,
        "total_requests": 0,
        "completed_requests": 0,
        "failed_requests": 0,
        "timeout_requests": 0,
        "cancelled_requests": 0,
        "rejected_requests": 0,
        "cache_hits": 0,
        "avg_wait_ms": None,
        "avg_processing_ms": None,
        "accepting": True,
        "following": 0,
        "replaying": 0,
    }
    return {**base, **values}


def test_figures_of_every_process_add_up() -> None:
    own = figures(
        total_requests=5,
        completed_requests=3,
        cancelled_requests=1,
        cache_hits=1,
        avg_wait_ms=10.0,
        avg_processing_ms=100.0,
        following=2,
        replaying=1,
    )
    other = figures(
        total_requests=4,
        completed_requests=1,
        failed_requests=1,
        timeout_requests=1,
        rejected_requests=2,
        avg_wait_ms=30.0,
        avg_processing_ms=None,
        following=1,
        replaying=0,
    )
    idle = figures(completed_requests=0, avg_wait_ms=50.0)  # weighs like one request
    shared = {"reachable": True, "queue_size": 4, "active_requests": 2, "others": [other, idle]}
    merged = merge_status(own, shared, "redis")
    assert merged["total_requests"] == 9
    assert merged["completed_requests"] == 4
    assert merged["failed_requests"] == 1 and merged["timeout_requests"] == 1
    assert merged["cancelled_requests"] == 1 and merged["rejected_requests"] == 2
    assert merged["cache_hits"] == 1
    # Weighted by completed requests (at least 1): (10*3 + 30*1 + 50*1) / 5 = 22.0
    assert merged["avg_wait_ms"] == 22.0
    assert merged["avg_processing_ms"] == 100.0  # processes without a figure are left out
    # The shared line, plus followers and replays that never entered it.
    assert merged["queue_size"] == 4 + 3 and merged["active_requests"] == 2 + 1
    assert merged["backend"] == "redis" and merged["queue_reachable"] is True
    assert merged["processes"] == 3
    assert "following" not in merged and "replaying" not in merged
    process = merged["process"]
    assert process["total_requests"] == 5 and "following" not in process


def test_averages_round_to_a_tenth_and_missing_counts_are_zero() -> None:
    own = figures(completed_requests=2, avg_wait_ms=1.0, avg_processing_ms=None)
    other = {"completed_requests": 1, "avg_wait_ms": 2.0}  # an older process: fewer fields
    merged = merge_status(
        own, {"reachable": True, "queue_size": 0, "active_requests": 0, "others": [other]}, "r"
    )
    assert merged["avg_wait_ms"] == 1.3  # (1*2 + 2*1) / 3 = 1.333…
    assert merged["avg_processing_ms"] is None
    assert merged["total_requests"] == 0 and merged["failed_requests"] == 0
    assert merged["queue_size"] == 0 and merged["active_requests"] == 0


def test_an_unreachable_shared_queue_reports_this_process_alone() -> None:
    own = figures(total_requests=2, following=1)
    merged = merge_status(own, {"reachable": False}, "redis")
    process = {k: v for k, v in own.items() if k not in ("following", "replaying")}
    assert merged == {**process, "backend": "redis", "queue_reachable": False, "process": process}


async def test_a_local_queue_reports_its_backend() -> None:
    manager = make_manager(GateWorkflow())
    status = await manager.shared_status()
    assert status["backend"] == "local" and status == {**manager.status(), "backend": "local"}


def test_times_are_iso_8601_in_utc() -> None:
    assert iso(None) is None
    assert iso(0) == "1970-01-01T00:00:00+00:00"
    record = RequestRecord(request_id="r", query="q", created_at=86400.5)
    assert record.as_dict()["created_at"] == "1970-01-02T00:00:00.500000+00:00"
    assert datetime.fromisoformat(record.as_dict()["created_at"]).tzinfo == UTC


async def test_listeners_hear_each_final_record_once_and_closers_run_at_close() -> None:
    gate = GateWorkflow(chunks=1)
    manager = make_manager(gate)
    heard: list[tuple[str, str]] = []
    closed: list[str] = []

    def failing(record: RequestRecord) -> None:
        raise RuntimeError("a broken listener must not stop the others")

    async def closer() -> None:
        closed.append("closed")

    manager.add_listener(failing)
    manager.add_listener(lambda record: heard.append((record.query, record.status.value)))
    manager.add_closer(closer)
    ticket = await manager.submit("q")
    gate.open(ticket.request_id)
    async for _event in manager.events(ticket):
        pass
    manager.release(ticket)  # already finished: nothing more to hear
    assert heard == [("q", "completed")]
    found = await manager.find(ticket.request_id)
    assert found is not None and found["status"] == "completed"
    assert closed == []
    await manager.close()
    assert closed == ["closed"]


async def test_this_process_publishes_its_followers_and_replays() -> None:
    from .test_answer_cache import MemoryCache, make

    gate = GateWorkflow()
    manager = make(gate, MemoryCache())
    leader = await manager.submit("Q")
    await manager.submit("Q")  # follows the leader: never enters the shared line
    snapshot = manager.reporter.snapshot()
    assert (snapshot["following"], snapshot["replaying"]) == (1, 0)
    assert snapshot["total_requests"] == 2
    gate.open(leader.request_id)


async def test_status_names_every_figure_an_operator_reads() -> None:
    manager = make_manager(
        GateWorkflow(),
        max_concurrent=2,
        max_queue_size=7,
        request_timeout_sec=45.0,
        max_per_client=4,
    )
    manager.stats.wait_ms.add(1234.5678)
    manager.stats.processing_ms.add(987.6543)
    status = manager.status()
    uptime = status.pop("uptime_sec")
    assert isinstance(uptime, float) and 0 <= uptime < 60
    assert status == {
        "queue_size": 0,
        "active_requests": 0,
        "max_concurrent_requests": 2,
        # How the limit in use is set: a fixed one is its own floor and ceiling.
        "concurrency": {"mode": "fixed", "floor": 2, "ceiling": 2},
        "max_queue_size": 7,
        "request_timeout_sec": 45.0,
        "total_requests": 0,
        "completed_requests": 0,
        "failed_requests": 0,
        "timeout_requests": 0,
        "cancelled_requests": 0,
        "rejected_requests": 0,
        # No refusal yet: each code still shows 0, not null.
        "rejected_queue_full": 0,
        "rejected_client_limit": 0,
        "rejected_rate_limited": 0,
        "rejected_wait_too_long": 0,
        "max_requests_per_client": 4,
        "cache_hits": 0,
        # Averages in milliseconds, to a tenth.
        "avg_wait_ms": 1234.6,
        "avg_processing_ms": 987.7,
        # Nobody has waited in line yet: no estimate to have been wrong about.
        "estimated_wait_error_p50_sec": None,
        "accepting": True,
    }


async def test_followers_wait_in_the_line_and_replays_take_no_slot_but_count_as_active(
    gate: GateWorkflow,
) -> None:
    from .test_answer_cache import MemoryCache, make

    cache = MemoryCache()
    cache.data["what is dna"] = CachedAnswer("DNA is a molecule.")
    manager = make(gate, cache, max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    follower = await manager.submit("Q")  # waits for the leader's answer
    replay = await manager.submit("What is DNA?")  # answered from the cache, not yet streamed
    assert follower.share.replay is None and replay.share.replay is not None
    status = manager.status()
    assert (status["queue_size"], status["active_requests"]) == (1, 2)
    assert status["total_requests"] == 3
    gate.open(leader.ticket.request_id)
    await leader.done()
    for ticket in (follower, replay):
        await Stream(manager, ticket).done()
    status = manager.status()
    assert (status["queue_size"], status["active_requests"]) == (0, 0)
    assert status["completed_requests"] == 3 and status["cache_hits"] == 2
