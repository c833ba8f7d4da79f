"""Reader replacement across processes: a newer reader anywhere closes the older one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from guest_queue.core.records import Status

from .conftest import Factory, admission, listening, until
from .test_redis_resume import Held, SharedReader, started
from .test_resume import Reader, chunks


async def _replaced_promptly(old_task: asyncio.Future[None]) -> None:
    """A replaced reader's connection closes within about a second (pub/sub), not at its
    next renewal nor at the end of the answer."""
    await asyncio.wait_for(asyncio.shield(old_task), 1.0)


async def test_a_reader_on_another_process_replaces_the_local_one(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=0.3), shared(flow, resume_grace_sec=0.3)
    ticket, old = await started(flow, a)
    await listening(a, b)
    new = SharedReader(b, ticket.request_id, old.seqs[-1], claims=True)
    await _replaced_promptly(old.task)
    assert a.resumes.by_id[ticket.request_id].reader is None
    await asyncio.sleep(0.6)  # past the grace: the newer reader keeps the request alive
    assert ticket.record.status.value == "processing"
    flow.release.set()
    await asyncio.wait_for(new.task, 5)
    assert new.text() == "b0 b1 b2 " and new.events[-1]["event"] == "workflow_complete"
    assert a.status()["completed_requests"] == 1


async def test_a_local_resume_replaces_a_reader_on_another_process(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=0.3), shared(flow, resume_grace_sec=0.3)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    remote = SharedReader(b, ticket.request_id, first.seqs[-1], claims=True)
    await asyncio.sleep(0.3)  # it has claimed the request and waits for more
    assert not remote.task.done()
    back = Reader(a, a.resumes.get(ticket.request_id), after=first.seqs[-1])
    await _replaced_promptly(remote.task)
    flow.release.set()
    assert (await back.done())[-1] == "workflow_complete"
    assert chunks(back) == "b0 b1 b2 " and remote.text() == ""


async def test_a_newer_reader_on_a_third_process_replaces_a_remote_one(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    b, c = shared(flow, resume_grace_sec=0.3), shared(flow, resume_grace_sec=0.3)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b, c)
    seen = first.seqs[-1]
    on_b = SharedReader(b, ticket.request_id, seen, claims=True)
    await asyncio.sleep(0.3)
    on_c = SharedReader(c, ticket.request_id, seen, claims=True)
    await _replaced_promptly(on_b.task)
    # And one on the same process replaces it too.
    again = SharedReader(c, ticket.request_id, seen, claims=True)
    await _replaced_promptly(on_c.task)
    flow.release.set()
    await asyncio.wait_for(again.task, 5)
    assert again.text() == "b0 b1 b2 " and again.events[-1]["event"] == "workflow_complete"
    assert a.status()["completed_requests"] == 1 and a.status()["cancelled_requests"] == 0


async def test_a_reader_that_missed_the_announcement_closes_at_its_next_renewal(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    ticket, first = await started(flow, a)
    await first.disconnect()
    logs = b.resumes.shared
    assert logs is not None
    # A reader reading without hearing announcements (as if its subscription dropped).
    deaf = SharedReader(b, ticket.request_id, first.seqs[-1])
    await asyncio.sleep(0.2)
    await logs.claim(ticket.request_id, 4.0)  # a newer reader somewhere
    # It renews every REMOTE_ATTACH_SEC / 2 at most (the heartbeat here is 0.5 s).
    await asyncio.wait_for(asyncio.shield(deaf.task), 2.5)
    flow.release.set()


async def test_a_local_reader_whose_claim_comes_back_older_than_one_heard_of_closes(
    shared: Factory,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    remote = SharedReader(b, ticket.request_id, first.seqs[-1], claims=True)
    res = a.resumes.get(ticket.request_id)
    await until(lambda: res.newest > 0)  # a heard of b's claim
    logs = admission(a).logs

    async def overtaken(request_id: str, ttl_sec: float) -> int:
        await asyncio.sleep(0.05)
        return 1  # as if b's claim had been taken after this one

    logs.claim = overtaken  # type: ignore[method-assign]
    late = Reader(a, res, after=first.seqs[-1])
    await asyncio.wait_for(asyncio.shield(late.task), 1.0)  # it closes: b's reader is newer
    assert res.reader is None
    flow.release.set()
    await asyncio.wait_for(remote.task, 5)
    assert remote.text() == "b0 b1 b2 " and remote.events[-1]["event"] == "workflow_complete"


async def test_the_first_reader_stays_when_the_claims_are_checked_again(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=0.3)
    ticket, first = await started(flow, a)
    # What the listener does once its subscription is remade: claims announced meanwhile
    # may have been missed, so each attached reader's newest claim is read from Redis.
    # The first reader never claimed anything (nobody read elsewhere): it stays.
    a.resumes.heard_claim("", 0)
    await asyncio.sleep(0.2)
    assert a.resumes.by_id[ticket.request_id].reader is not None
    flow.release.set()
    assert (await first.done())[-1] == "workflow_complete"
    assert chunks(first) == "a0 a1 a2 b0 b1 b2 "


async def test_a_remote_reader_closes_as_soon_as_a_newer_reader_claims_not_at_its_renewal(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=5)
    # b's Redis timeout lets its remote reader block 2 s between renewals of its claim.
    b = shared(flow, resume_grace_sec=5, redis_timeout_sec=4, lease_sec=15)
    ticket, first = await started(flow, a)
    await first.disconnect()
    await listening(a, b)
    logs = b.resumes.shared
    assert logs is not None
    remote = SharedReader(b, ticket.request_id, first.seqs[-1], claims=True)
    async with asyncio.timeout(3):
        while not await logs.attached(ticket.request_id):
            await asyncio.sleep(0.02)
    # Its claim was just renewed; a reader coming back to a closes it at once all the same.
    back = Reader(a, a.resumes.get(ticket.request_id), after=first.seqs[-1])
    await asyncio.wait_for(asyncio.shield(remote.task), 0.5)
    flow.release.set()
    assert (await back.done())[-1] == "workflow_complete"
    assert chunks(back) == "b0 b1 b2 " and remote.text() == ""


async def test_a_reader_replaced_unheard_closes_when_the_claims_are_checked_again(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=5)
    ticket, first = await started(flow, a)
    logs = admission(a).logs
    # A reader on another process claimed the request while this process's subscription
    # was being remade: the claim is in Redis, its announcement never arrived here.
    await logs.client.set(logs.attached_key(ticket.request_id), 1, px=4000)
    await asyncio.sleep(0.2)
    assert not first.task.done()
    # What the listener does once its subscription is remade: the claims are read again.
    a.resumes.heard_claim("", 0)
    await _replaced_promptly(first.task)
    assert a.resumes.by_id[ticket.request_id].reader is None
    flow.release.set()


async def test_a_cancel_right_after_a_reader_moved_to_another_process_is_heard(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = Held()
    a, b = shared(flow, resume_grace_sec=5), shared(flow, resume_grace_sec=5)
    ticket, old = await started(flow, a)
    await listening(a, b)
    new = SharedReader(b, ticket.request_id, old.seqs[-1], claims=True)
    await _replaced_promptly(old.task)
    # a heard of b's claim (a request nobody on a reads remotely): its listener listens on.
    assert await b.cancel_anywhere(ticket.request_id) is Status.CANCELLED
    await until(lambda: ticket.record.status is Status.CANCELLED, timeout=1)
    await asyncio.wait_for(new.task, 5)
    assert new.events[-1]["event"] == "error"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
