"""Resumable requests on a shared queue: a resume on another process finds the log in Redis."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from guest_queue.core.backends.base import StopReason
from guest_queue.core.backends.redis.link import RedisLink, RedisOptions
from guest_queue.core.errors import Unavailable
from guest_queue.core.events import RECONNECT, Event
from guest_queue.core.resume import read_shared

from ..services import closed_port
from .conftest import Factory, GateWorkflow, Stream, admission, listening, until
from .test_answer_cache import MemoryCache
from .test_resume import Reader, chunks


class Held:
    """Streams three chunks, waits for ``release``, then three more."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stream(self, request: Any) -> Any:
        for i in range(3):
            yield f"a{i} "
        await self.release.wait()
        for i in range(3):
            yield f"b{i} "
        yield {"event": "workflow_complete", "data": {"suggested_questions": []}}


class SharedReader:
    """A reader on another process: the log from Redis (``claims``: as the view reads it,
    its claim known to the process, so that a newer reader there closes it at once)."""

    def __init__(self, manager: Any, request_id: str, after: int, *, claims: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        if claims:
            gen = manager.resumes.read_remote(request_id, after, with_ids=True)
        else:
            gen = read_shared(
                manager.resumes.shared, request_id, after, with_ids=True, heartbeat=0.5
            )
        self.task = asyncio.ensure_future(self._consume(gen))

    async def _consume(self, gen: Any) -> None:
        async for part in gen:
            for message in part.decode().split("\n\n"):
                if message.startswith("data: "):
                    self.events.append(json.loads(message.split("\n")[0][len("data: ") :]))

    def text(self) -> str:
        return "".join(e["data"] for e in self.events if e["event"] == "answer_chunk")


async def test_a_resume_on_another_process_gets_the_rest_and_keeps_it_alive(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    b = shared(flow, resume_grace_sec=0.3)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    seen = reader.seqs[-1]
    assert b.resumes.shared is not None
    assert await b.resumes.shared.state(ticket.request_id) == "live"
    other = SharedReader(b, ticket.request_id, seen)
    await asyncio.sleep(1.0)  # well past the grace: the reader on b keeps it alive
    assert ticket.record.status.value == "processing"
    flow.release.set()
    await asyncio.wait_for(other.task, 5)
    assert other.text() == "b0 b1 b2 "
    assert [e["seq"] for e in other.events] == list(range(seen + 1, seen + 1 + len(other.events)))
    assert other.events[-1]["event"] == "workflow_complete"
    assert a.status()["completed_requests"] == 1 and a.status()["cancelled_requests"] == 0
    await until(lambda: a.resumes.by_id == {}, timeout=3)
    await until_state(b, ticket.request_id, "expired")


async def test_nobody_on_any_process_ends_it_after_the_grace(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    await until(lambda: a.status()["cancelled_requests"] == 1)
    await until(lambda: a.status()["active_requests"] == 0)


async def until_state(manager: Any, request_id: str, state: str) -> None:
    async with asyncio.timeout(5):
        while await manager.resumes.shared.state(request_id) != state:
            await asyncio.sleep(0.05)


async def test_a_draining_process_hands_its_waiting_guests_to_another_in_order(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    waiting = [await a.submit(f"w{i}") for i in range(3)]
    readers = [Reader(a, a.resumable(t)) for t in waiting]
    behind = Stream(b, await b.submit("behind"))  # in line after them, on the other process
    await until(lambda: all(r.names == ["queued"] for r in readers))
    a.begin_drain()
    for reader in readers:
        # Not ended: told to reconnect, and the stream closes.
        assert (await reader.done())[-1] == "reconnect"
    assert a.status()["cancelled_requests"] == 0
    # Counted once, by the process that answers them: figures across processes add up.
    assert a.status()["total_requests"] == 1
    resumed: list[Reader] = []
    for ticket, reader in zip(waiting, readers, strict=True):
        res = await b.handoff.adopt(ticket.request_id)
        assert res is not None and res.ticket.position == len(resumed) + 1
        resumed.append(Reader(b, res, after=reader.seqs[-1]))
    assert await b.handoff.adopt(waiting[0].request_id) is None  # adopted once only
    gate.open(running.request_id)
    for ticket, old, reader in zip(waiting, readers, resumed, strict=True):
        gate.open(ticket.request_id)
        assert (await reader.done())[-1] == "workflow_complete"
        # The same request, numbered on from where the guest was: nothing twice.
        assert reader.seqs == list(range(old.seqs[-1] + 1, old.seqs[-1] + 1 + len(reader.seqs)))
        assert {e["request_id"] for e in reader.events} == {ticket.request_id}
    await until(lambda: "behind" in gate.started)
    gate.open(behind.ticket.request_id)
    await behind.done()
    assert gate.started == ["running", "w0", "w1", "w2", "behind"]
    assert b.status()["completed_requests"] == 4
    assert b.status()["total_requests"] == 4
    await until(lambda: a.status()["completed_requests"] == 1)
    assert a.status()["total_requests"] == 1


async def test_a_cancel_through_another_process_ends_the_request_at_once(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1)
    b = shared(gate, max_concurrent=1)
    running = Stream(a, await a.submit("running"))
    waiting = Stream(a, await a.submit("waiting"))
    await until(lambda: gate.started == ["running"])
    await listening(a, b)
    assert (await b.cancel_anywhere(running.ticket.request_id)) is not None
    assert (await running.done())[-1] == "error"
    assert running.events[-1].data["code"] == "cancelled"
    await until(lambda: gate.started == ["running", "waiting"])  # its slot was freed
    assert await b.cancel_anywhere("00000000-0000-4000-8000-000000000000") is None
    gate.open(waiting.ticket.request_id)
    await waiting.done()


async def test_a_waiter_admitted_here_while_being_handed_off_stays_here(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, shutdown_grace_sec=5, resume_grace_sec=10)
    b = shared(gate, max_concurrent=1, resume_grace_sec=10)
    running = await a.submit("running")
    Reader(a, a.resumable(running))
    await until(lambda: gate.started == ["running"])
    ticket = await a.submit("w")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: reader.names == ["queued"])
    backend = admission(a)
    script_run = backend.link.run

    async def admitted_meanwhile(script: Any, keys: list[str], args: list[Any]) -> Any:
        reply = await script_run(script, keys, args)
        # Private: the hand-off script's identity and the admission message's handler stage
        # the race (admitted before the script's reply), which no public call can order.
        if script is backend._hand_off:
            # Its admission's message arrives before the script's reply.
            backend._admit_waiting(ticket.request_id)
        return reply

    backend.link.run = admitted_meanwhile  # type: ignore[method-assign]
    a.begin_drain()
    await until(lambda: not a.accepting)
    await asyncio.sleep(0.2)
    assert await b.handoff.adopt(ticket.request_id) is None  # nobody else may drive it
    assert ticket.drive.stop is not StopReason.HANDED_OFF
    gate.open(running.request_id)
    gate.open(ticket.request_id)
    assert (await reader.done())[-1] == "workflow_complete"
    await asyncio.wait_for(a.close(), 4)  # the drain does not wait for a ticket nobody ends


async def test_a_cancel_that_redis_py_turns_into_a_connection_error_still_cancels() -> None:
    link = RedisLink(RedisOptions(url="redis://127.0.0.1:1"))

    async def script(keys: list[str], args: list[Any]) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    task = asyncio.ensure_future(link.run(script, [], []))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await link.aclose()


async def test_a_remote_reader_ends_its_stream_at_a_reconnect(
    shared: Factory,
) -> None:
    a = shared(Held())
    logs = a.resumes.shared
    assert logs is not None
    rid = "00000000-0000-4000-8000-00000000000a"
    logs.append(rid, 1, Event("queued", {"position": 1}))
    logs.append(rid, 2, Event(RECONNECT, {"retry_ms": 250}))
    reader = SharedReader(a, rid, 0)
    # It ends (the client resumes and another process adopts the request): no heartbeats
    # on a log nobody writes any more.
    await asyncio.wait_for(reader.task, 3)
    assert [e["event"] for e in reader.events] == ["queued", "reconnect"]


async def test_a_remote_reader_ends_cleanly_when_redis_fails(
    shared: Factory,
) -> None:
    a = shared(Held())
    logs = a.resumes.shared
    assert logs is not None

    async def broken(*args: Any) -> Any:
        raise RedisConnectionError("Connection refused.")

    logs.read = broken  # type: ignore[assignment]
    reader = SharedReader(a, "00000000-0000-4000-8000-00000000000b", 0)
    await asyncio.wait_for(reader.task, 3)  # no exception: the stream just ends
    assert reader.events == []


async def test_resume_and_cancel_lookups_say_unavailable_when_redis_is_down(
    shared: Factory,
) -> None:
    a = shared(Held(), redis_url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=1.2)
    logs = a.resumes.shared
    assert logs is not None
    rid = "00000000-0000-4000-8000-00000000000c"
    # The views turn Unavailable into a 503 JSON answer with Retry-After, not a 500.
    with pytest.raises(Unavailable):
        await logs.state(rid)
    with pytest.raises(Unavailable):
        await logs.cancel(rid)


async def test_closing_writes_every_pending_event_first(
    shared: Factory,
) -> None:
    a = shared(Held())
    logs = admission(a).logs
    rid = "00000000-0000-4000-8000-00000000000d"
    for seq in range(1, 301):
        logs.append(rid, seq, Event("answer_chunk", {"text": "x" * 200}))
        if seq % 100 == 0:
            await asyncio.sleep(0)  # the writer takes a batch, more queue behind it
    await logs.close()
    assert len(await logs.read(rid, 0, 0.001)) == 300


async def test_a_remote_reader_of_a_request_whose_process_died_gets_an_error(
    shared: Factory,
) -> None:
    a = shared(Held())
    logs = a.resumes.shared
    assert logs is not None
    rid = "00000000-0000-4000-8000-00000000000e"  # in no process's line nor slots
    logs.append(rid, 1, Event("queued", {"position": 1}))
    await until_state(a, rid, "live")
    gen = read_shared(
        logs,
        rid,
        0,
        with_ids=True,
        heartbeat=0.2,
        alive=functools.partial(a.anywhere.held_anywhere, rid),
    )
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for part in gen:
            for message in part.decode().split("\n\n"):
                if message.startswith("data: "):
                    events.append(json.loads(message.split("\n")[0][len("data: ") :]))

    await asyncio.wait_for(consume(), 5)
    assert [e["event"] for e in events] == ["queued", "error"]
    assert events[-1]["data"]["code"] == "unavailable"
    ticket = await a.submit("q")  # one a process holds is alive
    assert await a.anywhere.held_anywhere(ticket.request_id)


async def started(flow: Held, a: Any) -> tuple[Any, Reader]:
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    return ticket, reader


def standing(manager: Any) -> set[Any]:
    """The manager's long-lived tasks (admission, sweeps, listener)."""
    return set(manager.stopper.background)


async def test_the_driver_of_a_cancelled_resumable_request_stops_and_leaves_no_task(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow)
    await listening(a, b)
    before = standing(a)
    ticket, reader = await started(flow, a)
    res = a.resumes.get(ticket.request_id)
    workflow = ticket.drive.task
    await reader.disconnect()  # nobody reads: the driver pumps on alone
    assert res.driver is not None and not res.driver.done()
    assert await b.cancel_anywhere(ticket.request_id) is not None
    await until(lambda: res.driver is not None and res.driver.done(), timeout=3)
    await until(lambda: not a.stopper.workflow_tasks and standing(a) <= before, timeout=3)
    assert workflow is not None and workflow.cancelled()
    assert ticket.drive.task is None  # a stopped workflow task is forgotten by its ticket
    assert res.log.finished and ticket.record.status.value == "cancelled"
    assert a.status()["active_requests"] == 0


async def test_an_answer_carried_on_for_followers_stops_when_it_ends(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=2)
    await asyncio.sleep(0.1)
    before = standing(a)
    leader = Stream(a, await a.submit("Q"))
    follower = Stream(a, await a.submit("Q"))
    await until(lambda: "".join(e.data for e in follower.events[2:]) == "Q-0 Q-1 ")
    await leader.disconnect()  # its answer is pumped on, for the follower
    await asyncio.sleep(0.05)
    carried = standing(a) - before
    assert len(carried) == 1 and not next(iter(carried)).done()
    # Its guest cancelling changes nothing: it has already gone, the answer is the follower's.
    a.cancel(leader.ticket.request_id)
    await asyncio.sleep(0.05)
    assert gate.closed == [] and not follower.task.done()
    # The last follower leaves: the pump ends, the workflow stops, nothing is left running.
    await follower.disconnect()
    a.release(follower.ticket)
    await until(lambda: not a.stopper.workflow_tasks and standing(a) <= before, timeout=3)
    assert gate.closed == ["Q"] and a.status()["active_requests"] == 0
    assert a.lookup(leader.ticket.request_id)["status"] == "cancelled"  # type: ignore[index]


async def test_a_remote_reader_leaving_gives_up_its_claim_at_once(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=5)
    b = shared(flow, resume_grace_sec=5)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    logs = b.resumes.shared
    assert logs is not None
    remote = SharedReader(b, ticket.request_id, reader.seqs[-1], claims=True)
    await until(lambda: b.resumes.remote.get(ticket.request_id, [None])[0] is not None)
    async with asyncio.timeout(3):
        while not await logs.attached(ticket.request_id):
            await asyncio.sleep(0.02)
    remote.task.cancel()
    await asyncio.gather(remote.task, return_exceptions=True)
    assert ticket.request_id not in b.resumes.remote
    async with asyncio.timeout(1.5):  # a claim left to lapse would hold 4 s
        while await logs.attached(ticket.request_id):
            await asyncio.sleep(0.02)
    flow.release.set()
