"""Followers lining up again on a shared queue, and whether a request is held anywhere."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from guest_queue.core.backends.redis.link import UNREACHABLE
from guest_queue.core.errors import Unavailable

from ..services import closed_port
from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_answer_cache import MemoryCache


async def test_a_follower_lines_up_again_even_when_the_line_is_full(
    shared: Factory,
) -> None:
    gate = GateWorkflow(chunks=0)
    a = shared(gate, MemoryCache(), max_concurrent=1, max_queue_size=1)
    b = shared(gate, max_concurrent=1, max_queue_size=1)
    leader = Stream(a, await a.submit("Q"))
    follower = Stream(a, await a.submit("Q"))
    other = Stream(b, await b.submit("other"))  # the line is full now
    await until(lambda: gate.started == ["Q"])
    gate.fail(leader.ticket.request_id)  # before any chunk: its follower lines up again
    # An accepted request is never refused for a full line when it lines up again.
    gate.open(other.ticket.request_id)
    await until(lambda: gate.started == ["Q", "other", "Q"])
    for request_id in list(gate.gates):
        gate.open(request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await other.done()
    # Private: a requeue task left behind shows nowhere public.
    await until(lambda: not admission(a)._requeues)  # no task left behind


async def test_a_follower_that_cannot_line_up_again_is_told_the_queue_is_unreachable(
    shared: Factory,
) -> None:
    gate = GateWorkflow(chunks=0)
    a = shared(gate, MemoryCache(), max_concurrent=1)
    leader = Stream(a, await a.submit("Q"))
    follower = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])

    async def unreachable(*args: Any, **kwargs: Any) -> int:
        raise Unavailable(UNREACHABLE, 1)

    # Private: the join script's call, made to fail; no public seam.
    admission(a)._join = unreachable  # type: ignore[method-assign]
    gate.fail(leader.ticket.request_id)
    assert (await follower.done())[-1] == "error"
    assert follower.events[-1].data == {"error": UNREACHABLE, "code": "unavailable"}
    await until(lambda: a.status()["active_requests"] == 0)


async def test_held_anywhere_finds_a_request_another_process_holds(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1)
    b = shared(gate, max_concurrent=1)
    running = Stream(b, await b.submit("running"))
    waiting = Stream(b, await b.submit("waiting"))
    await until(lambda: gate.started == ["running"])
    assert await a.anywhere.held_anywhere(running.ticket.request_id)
    assert await a.anywhere.held_anywhere(waiting.ticket.request_id)
    assert not await a.anywhere.held_anywhere("00000000-0000-4000-8000-000000000000")
    for stream in (running, waiting):
        gate.open(stream.ticket.request_id)
    await running.done()
    await waiting.done()


async def test_held_anywhere_says_yes_when_it_cannot_tell(shared: Factory) -> None:
    down = shared(GateWorkflow(), redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=1.2)
    assert await down.anywhere.held_anywhere("00000000-0000-4000-8000-000000000000")

    async def broken(request_id: str) -> None:
        raise RuntimeError("a bug in the lookup")

    down.admission.locate = broken  # type: ignore[method-assign]
    assert await down.anywhere.held_anywhere("00000000-0000-4000-8000-000000000000")


async def test_held_anywhere_finds_a_follower_without_a_place_of_its_own(
    shared: Factory,
) -> None:
    gate = GateWorkflow(chunks=0)
    a = shared(gate, MemoryCache(), max_concurrent=1)
    leader = Stream(a, await a.submit("Q"))
    follower = Stream(a, await a.submit("Q"))
    assert follower.ticket.share.leader is leader.ticket  # in no line and no slot in Redis
    assert await a.anywhere.held_anywhere(follower.ticket.request_id)
    await until(lambda: gate.started == ["Q"])
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"


async def test_waiting_guests_keep_their_places_through_a_short_redis_outage(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    # Renewal passes fail for a moment, well within the lease (1.5 s): nothing is lost.
    a = shared(gate, max_concurrent=1)
    running = Stream(a, await a.submit("running"))
    waiting = Stream(a, await a.submit("waiting"))
    await until(lambda: waiting.ticket.position == 1)
    link = admission(a).link
    real_run = link.run
    failures = 0

    async def unreachable(script: Any, keys: list[str], args: list[Any]) -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise Unavailable(UNREACHABLE, 1)
        return await real_run(script, keys, args)

    link.run = unreachable  # type: ignore[method-assign]
    await until(lambda: failures == 2)
    link.run = real_run  # type: ignore[method-assign]
    await asyncio.sleep(0.6)  # another renewal pass, successful
    assert waiting.names == ["queued"] and waiting.ticket.position == 1
    gate.open(running.ticket.request_id)
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"


async def test_a_freed_slot_goes_at_once_to_the_next_guest_in_another_process(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    # Renewals every 2 s: the next guest must be let in by the admission Redis announces,
    # not at its process's next renewal.
    a = shared(gate, max_concurrent=1, lease_sec=6)
    b = shared(gate, max_concurrent=1, lease_sec=6)
    running = Stream(a, await a.submit("running"))
    await until(lambda: gate.started == ["running"])
    waiting = Stream(b, await b.submit("waiting"))
    await until(lambda: waiting.names == ["queued"])
    await asyncio.sleep(0.3)
    gate.open(running.ticket.request_id)
    await running.done()
    freed = time.monotonic()
    await until(lambda: gate.started == ["running", "waiting"], timeout=3)
    assert time.monotonic() - freed < 1.5  # the next renewal is 2 s away
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"
