"""A reader on the process driving a request, once a reader elsewhere was heard of: its claim
in Redis failing, coming back late or after its own announcement; and the grace's end asking
Redis whether anyone reads (Redis failing, a reader elsewhere leaving, one attaching here)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from guest_queue.core import resume
from guest_queue.core.backends.redis.logs import RedisLogs
from guest_queue.core.manager import QueueManager
from guest_queue.core.resume import Resumable

from .conftest import Factory, admission, listening, until
from .test_redis_resume import Held, SharedReader, started
from .test_resume import Reader


async def read_elsewhere_before(
    flow: Held, a: QueueManager, b: QueueManager
) -> tuple[Resumable, Reader]:
    """A request driven by ``a`` whose first reader left, then a reader on ``b`` came and
    went: a reader on ``a`` now claims the request in Redis."""
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    res = a.resumes.get(ticket.request_id)
    elsewhere = b.resumes.shared
    assert elsewhere is not None
    number = await elsewhere.claim(ticket.request_id, 4.0)
    await until(lambda: res.newest == number)
    await elsewhere.unclaim(ticket.request_id, number)
    return res, first


async def test_a_local_reader_whose_claim_fails_is_still_closed_by_a_newer_reader_elsewhere(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "guest_queue")
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    res, first = await read_elsewhere_before(flow, a, b)

    async def refused(request_id: str, ttl_sec: float) -> int:
        raise RedisConnectionError("Connection refused.")

    admission(a).logs.claim = refused  # type: ignore[method-assign]
    late = Reader(a, res, after=first.seqs[-1])
    await asyncio.sleep(0.1)
    assert not late.task.done()  # it reads on without a claim
    assert [r.getMessage() for r in caplog.records] == [
        f"Could not claim request {res.request_id} in Redis (Connection refused.)"
    ]
    assert b.resumes.shared is not None
    await b.resumes.shared.claim(res.request_id, 4.0)  # a newer reader on another process
    await asyncio.wait_for(asyncio.shield(late.task), 1.0)
    assert res.reader is None
    flow.release.set()


async def test_a_local_reader_gone_before_its_claim_came_back_gives_it_up_at_once(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    res, first = await read_elsewhere_before(flow, a, b)
    logs = admission(a).logs
    claim, answer = logs.claim, asyncio.Event()
    taken: list[int] = []

    async def slow(request_id: str, ttl_sec: float) -> int:
        await answer.wait()
        taken.append(await claim(request_id, ttl_sec))
        return taken[-1]

    logs.claim = slow  # type: ignore[method-assign]
    late = Reader(a, res, after=first.seqs[-1])
    await asyncio.sleep(0.05)
    await late.disconnect()
    answer.set()
    await until(lambda: taken != [])
    async with asyncio.timeout(1.5):  # a claim left to lapse would hold 4 s
        while await logs.attached(res.request_id):
            await asyncio.sleep(0.02)
    flow.release.set()


async def test_a_local_reader_hearing_its_own_claim_before_the_reply_reads_on(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    res, first = await read_elsewhere_before(flow, a, b)
    logs = admission(a).logs
    claim = logs.claim

    async def announced_first(request_id: str, ttl_sec: float) -> int:
        number = await claim(request_id, ttl_sec)
        a.resumes.heard_claim(request_id, number)  # its announcement overtook the reply
        return number

    logs.claim = announced_first  # type: ignore[method-assign]
    late = Reader(a, res, after=first.seqs[-1])
    await asyncio.sleep(0.2)
    assert not late.task.done()
    flow.release.set()
    assert (await late.done())[-1] == "workflow_complete"


async def test_redis_failing_at_the_graces_end_ends_the_request_nobody_reads(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "guest_queue")
    flow = Held()
    a = shared(flow, resume_grace_sec=0.2)
    ticket, reader = await started(flow, a)
    logs: RedisLogs = admission(a).logs

    async def refused(request_id: str) -> bool:
        raise RedisConnectionError("Connection refused.")

    logs.attached = refused  # type: ignore[method-assign]
    await reader.disconnect()
    await until(lambda: a.status()["cancelled_requests"] == 1, timeout=2)
    assert f"Could not ask Redis whether request {ticket.request_id} is read" in [
        r.getMessage() for r in caplog.records
    ]


async def test_a_request_read_elsewhere_past_the_grace_ends_one_grace_after_that_reader_left(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=0.3), shared(flow, resume_grace_sec=0.3)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    remote = SharedReader(b, ticket.request_id, first.seqs[-1], claims=True)
    await asyncio.sleep(0.8)  # past the grace, twice
    assert ticket.record.status.value == "processing"
    remote.task.cancel()
    # Bounded: a reader that goes on after its cancel fails here instead of hanging.
    done, _ = await asyncio.wait((remote.task,), timeout=2)
    assert done, "the reader on b went on after it was cancelled"
    await until(lambda: a.status()["cancelled_requests"] == 1, timeout=2)


async def test_a_reader_attaching_while_redis_is_asked_at_the_graces_end_keeps_the_request(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.2)
    ticket, first = await started(flow, a)
    res = a.resumes.get(ticket.request_id)
    logs = admission(a).logs
    attached, asked, answer = logs.attached, asyncio.Event(), asyncio.Event()

    async def slow(request_id: str) -> Any:
        asked.set()
        await answer.wait()
        return await attached(request_id)

    logs.attached = slow  # type: ignore[method-assign]
    await first.disconnect()
    await asyncio.wait_for(asked.wait(), 2)  # the grace is over: is it read elsewhere?
    back = Reader(a, res, after=first.seqs[-1])
    await asyncio.sleep(0.05)
    answer.set()  # no (but it is read here now)
    await asyncio.sleep(0.1)
    flow.release.set()
    assert (await back.done())[-1] == "workflow_complete"
    assert a.status()["cancelled_requests"] == 0


async def test_a_request_nobody_ever_reads_ends_one_grace_after_it_was_accepted(
    shared: Factory,
) -> None:
    """The guest's POST was answered, but no stream ever came, on any process."""
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    ticket = await a.submit("q")
    a.resumable(ticket)
    await until(lambda: ticket.record.status.value == "processing")
    # Redis says nobody reads it: it is ended as cancelled, its slot given back.
    await until(lambda: a.status()["cancelled_requests"] == 1, timeout=3)
    assert a.status()["active_requests"] == 0


async def test_a_local_reader_that_claimed_the_request_gives_its_claim_back_when_it_leaves(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=1.0), shared(flow, resume_grace_sec=1.0)
    res, first = await read_elsewhere_before(flow, a, b)
    late = Reader(a, res, after=first.seqs[-1])
    await until(lambda: isinstance(res.claim, resume.Held))  # claimed in Redis, renewed
    await late.disconnect()
    # Gone: one grace (1 s) later the request ends, not once its claim would have lapsed.
    await until(lambda: a.status()["cancelled_requests"] == 1, timeout=3)
