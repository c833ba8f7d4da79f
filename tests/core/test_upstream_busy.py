"""A busy upstream (``WorkflowBusy``): before the first chunk the request waits in line
again, at the front; after it, or once its retries or its time run out, it ends as
``unavailable``. On the local queue and the shared one alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from guest_queue.core.manager import MAX_BUSY_RETRIES, QueueManager
from guest_queue.core.records import RequestRecord
from guest_queue.workflows.base import WorkflowBusy, WorkflowItem, WorkflowRequest

from .conftest import Factory, Stream, make_manager, until
from .test_answer_cache import MemoryCache
from .test_resume import Reader

BUSY = "The model is at capacity."


class BusyUpstream:
    """Each question's attempts follow its script: ``busy`` (raise ``WorkflowBusy`` before
    any chunk), ``gate-busy`` (the same once the test opens its gate), ``slow-busy`` (the
    same after 0.4 s), ``late`` (one
    chunk, then busy), ``wait`` (one chunk, then wait for the gate), else answer at once;
    a number after a step is its ``Retry-After``. Unscripted questions answer at once."""

    def __init__(self, retry_after: float | None = 0.05) -> None:
        self.retry_after = retry_after
        self.scripts: dict[str, list[str]] = {}
        self.attempts: list[str] = []
        self.gate = asyncio.Event()

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        self.attempts.append(request.query)
        script = self.scripts.get(request.query) or []
        step, _, after = (script.pop(0) if script else "answer").partition(" ")
        retry_after = float(after) if after else self.retry_after
        if step == "gate-busy":
            await self.gate.wait()
        if step == "slow-busy":
            await asyncio.sleep(0.4)
        if step in ("busy", "gate-busy", "slow-busy"):
            raise WorkflowBusy(retry_after, BUSY)
        yield f"{request.query}: "
        if step == "late":
            raise WorkflowBusy(retry_after, BUSY)
        if step == "wait":
            await self.gate.wait()
        yield "done"
        yield {"event": "workflow_complete", "data": {"suggested_questions": []}}


def finished(manager: QueueManager) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    manager.add_listener(records.append)
    return records


async def test_busy_before_the_first_chunk_waits_at_the_front_of_the_line(
    build: Factory,
) -> None:
    upstream = BusyUpstream(retry_after=0.3)
    upstream.scripts["first"] = ["busy", "answer"]
    upstream.scripts["second"] = ["wait"]
    manager = build(upstream, max_concurrent=2, max_queue_size=10)
    history = finished(manager)
    second = Stream(manager, await manager.submit("second"))
    await until(lambda: "processing" in second.names)
    first = Stream(manager, await manager.submit("first"))
    await until(lambda: first.names.count("queued") == 2)
    # Back in line, ahead of a later arrival, with the upstream's wait as its estimate.
    third = Stream(manager, await manager.submit("third"))
    again = [e for e in first.events if e.name == "queued"][1]
    assert again.data["queue_position"] == 1
    assert again.data["estimated_wait_sec"] >= 0.2
    looked_up = await manager.find(first.ticket.request_id)
    assert looked_up is not None
    # Waiting in line (the local limit shrank at once), or already holding a slot for its
    # restart at the Retry-After (on Redis the shrink comes with the limiter's next pass).
    assert looked_up["status"] in ("queued", "processing")
    await until(lambda: third.names[:1] == ["queued"])
    assert await first.done() == [
        "queued",
        "processing",
        "queued",
        "processing",
        "answer_chunk",
        "answer_chunk",
        "workflow_complete",
    ]
    # It went first: the later arrival started after it.
    await until(lambda: len(upstream.attempts) == 4)
    assert upstream.attempts == ["second", "first", "first", "third"]
    upstream.gate.set()
    await second.done()
    await third.done()
    status = manager.status()
    assert status["total_requests"] == 3 and status["completed_requests"] == 3
    assert [r.query for r in history].count("first") == 1
    assert [e.data for e in first.events if e.name == "answer_chunk"] == ["first: ", "done"]


async def test_busy_after_the_first_chunk_ends_as_unavailable(build: Factory) -> None:
    upstream = BusyUpstream()
    upstream.scripts["q"] = ["late"]
    manager = build(upstream, max_concurrent=1)
    history = finished(manager)
    stream = Stream(manager, await manager.submit("q"))
    assert await stream.done() == ["queued", "processing", "answer_chunk", "error"]
    assert stream.events[-1].data == {"error": BUSY, "code": "unavailable"}
    assert upstream.attempts == ["q"]
    assert [r.status for r in history] == ["failed"]
    assert manager.status()["failed_requests"] == 1


async def test_a_request_goes_back_in_line_a_few_times_at_most(build: Factory) -> None:
    upstream = BusyUpstream(retry_after=0.01)
    upstream.scripts["q"] = ["busy"] * (MAX_BUSY_RETRIES + 2)
    manager = build(upstream, max_concurrent=1)
    history = finished(manager)
    stream = Stream(manager, await manager.submit("q"))
    names = await stream.done()
    assert names.count("processing") == MAX_BUSY_RETRIES + 1
    assert names[-1] == "error" and stream.events[-1].data["code"] == "unavailable"
    assert upstream.attempts == ["q"] * (MAX_BUSY_RETRIES + 1)
    await until(lambda: len(history) == 1)
    assert manager.status()["total_requests"] == 1


async def test_a_request_is_not_retried_beyond_its_timeout(build: Factory) -> None:
    # The upstream asks for more time than the request has left: it ends at once.
    upstream = BusyUpstream(retry_after=30)
    upstream.scripts["q"] = ["busy", "answer"]
    manager = build(upstream, max_concurrent=1, request_timeout_sec=5)
    stream = Stream(manager, await manager.submit("q"))
    assert await stream.done() == ["queued", "processing", "error"]
    assert stream.events[-1].data == {"error": BUSY, "code": "unavailable"}


async def test_a_request_back_in_line_ends_when_its_timeout_runs_out() -> None:
    # Its timeout runs from its first admission. Back in line, it waits behind the
    # answers that took the slots the shrunk limit leaves: it ends when its time is up.
    # (The local queue: there the busy upstream shrinks the limit at once; on Redis the
    # shrink comes with the limiter's next pass, and the slot it gave back is its own again.)
    build = make_manager
    upstream = BusyUpstream()
    upstream.scripts["first"] = ["slow-busy 0.1", "answer"]
    upstream.scripts["hog-a"] = ["wait"]
    upstream.scripts["hog-b"] = ["wait"]
    manager = build(upstream, max_concurrent=3, request_timeout_sec=1)
    history = finished(manager)
    first = Stream(manager, await manager.submit("first"))
    await until(lambda: "processing" in first.names)
    hogs = [Stream(manager, await manager.submit(q)) for q in ("hog-a", "hog-b")]
    await until(lambda: first.names.count("queued") == 2)
    assert await first.done() == ["queued", "processing", "queued", "error"]
    assert first.events[-1].data == {"error": BUSY, "code": "unavailable"}
    record = first.ticket.record
    assert record.finished_mono is not None
    waited = record.finished_mono - record.created_mono
    assert 0.8 < waited < 3
    upstream.gate.set()
    for hog in hogs:
        await hog.done()
    await until(lambda: len(history) == 3)
    assert [r.status.value for r in history if r.query == "first"] == ["failed"]
    assert upstream.attempts.count("first") == 1


async def sent_back_with_one_behind(
    build: Factory,
) -> tuple[BusyUpstream, QueueManager, Stream, Stream]:
    """One slot: "first" sent back by its busy upstream (the slot is its own again, held
    until its 0.6 s Retry-After), "later" waiting behind it."""
    upstream = BusyUpstream()
    upstream.scripts["first"] = ["busy 0.6", "answer"]
    manager = build(upstream, max_concurrent=1)
    first = Stream(manager, await manager.submit("first"))
    await until(lambda: first.names.count("queued") == 2)
    later = Stream(manager, await manager.submit("later"))
    await until(lambda: later.names == ["queued"])
    return upstream, manager, first, later


async def test_cancelling_a_request_back_in_line_frees_its_place(build: Factory) -> None:
    upstream, manager, first, later = await sent_back_with_one_behind(build)
    assert manager.cancel(first.ticket.request_id) is not None
    assert await first.done() == ["queued", "processing", "queued", "error"]
    assert first.events[-1].data["code"] == "cancelled"
    assert (await later.done())[-1] == "workflow_complete"
    assert upstream.attempts == ["first", "later"]
    assert manager.status()["cancelled_requests"] == 1


async def test_a_guest_leaving_while_back_in_line_frees_its_place(build: Factory) -> None:
    upstream, manager, first, later = await sent_back_with_one_behind(build)
    await first.disconnect()
    assert (await later.done())[-1] == "workflow_complete"
    assert manager.status()["cancelled_requests"] == 1
    assert upstream.attempts == ["first", "later"]


async def test_followers_stay_with_a_busy_leader(build: Factory) -> None:
    upstream = BusyUpstream(retry_after=0.05)
    upstream.scripts["same question"] = ["busy", "answer"]
    manager = build(upstream, MemoryCache(), max_concurrent=1)
    history = finished(manager)
    leader = Stream(manager, await manager.submit("same question"))
    follower = Stream(manager, await manager.submit("same question"))
    assert (await leader.done())[-1] == "workflow_complete"
    assert await follower.done() == ["queued", "processing", "answer_chunk", "workflow_complete"]
    assert "".join(e.data for e in follower.events if e.name == "answer_chunk") == (
        "same question: done"
    )
    assert upstream.attempts == ["same question"] * 2
    await until(lambda: len(history) == 2)
    assert manager.status()["completed_requests"] == 2


async def test_a_leader_whose_guest_left_still_goes_back_in_line_for_its_followers(
    build: Factory,
) -> None:
    # The leader's guest leaves while its workflow runs; then the upstream is busy. The
    # answer goes back to the front for the follower (it used to end there, and the
    # follower fell back to the end of the line and asked the upstream on its own).
    upstream = BusyUpstream(retry_after=0.05)
    upstream.scripts["same question"] = ["gate-busy", "answer"]
    manager = build(upstream, MemoryCache(), max_concurrent=1)
    leader = Stream(manager, await manager.submit("same question"))
    await until(lambda: upstream.attempts == ["same question"])
    follower = Stream(manager, await manager.submit("same question"))
    await until(lambda: follower.names[:1] == ["queued"])
    other = Stream(manager, await manager.submit("other"))
    await until(lambda: other.names[:1] == ["queued"])
    await leader.disconnect()
    upstream.gate.set()
    assert (await follower.done())[-1] == "workflow_complete"
    assert "".join(e.data for e in follower.events if e.name == "answer_chunk") == (
        "same question: done"
    )
    await other.done()
    # The answer kept its place at the front: asked again before the later question.
    assert upstream.attempts == ["same question", "same question", "other"]
    await until(lambda: manager.status()["active_requests"] == 0)


async def test_a_resumable_request_goes_back_in_line_in_its_log(build: Factory) -> None:
    upstream = BusyUpstream(retry_after=0.05)
    upstream.scripts["q"] = ["busy", "answer"]
    manager = build(upstream, max_concurrent=1)
    ticket = await manager.submit("q")
    reader = Reader(manager, manager.resumable(ticket))
    assert await reader.done() == [
        "queued",
        "processing",
        "queued",
        "processing",
        "answer_chunk",
        "answer_chunk",
        "workflow_complete",
    ]
    assert reader.seqs == list(range(1, 8))
    assert manager.status()["completed_requests"] == 1


async def test_a_draining_process_finishes_a_request_held_for_its_retry(
    shared: Factory,
) -> None:
    # Sent back to the front with a slot free, the request holds that slot until the
    # upstream's Retry-After: a drain meanwhile lets it restart and finish, not lose it.
    upstream = BusyUpstream()
    upstream.scripts["q"] = ["busy 1", "answer"]
    a = shared(upstream, max_concurrent=1, shutdown_grace_sec=5)
    b = shared(upstream, max_concurrent=1)
    first = Stream(a, await a.submit("q"))
    await until(lambda: first.names == ["queued", "processing", "queued"])
    behind = Stream(b, await b.submit("behind"))
    await until(lambda: behind.names[:1] == ["queued"])
    drained = asyncio.ensure_future(a.drain())
    assert (await first.done())[-1] == "workflow_complete"
    await asyncio.wait_for(drained, 5)
    assert (await behind.done())[-1] == "workflow_complete"
    assert upstream.attempts == ["q", "q", "behind"]
    assert a.status()["completed_requests"] == 1 and a.status()["total_requests"] == 1
