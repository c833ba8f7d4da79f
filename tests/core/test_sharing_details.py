"""Single flight, in detail: who may be followed, and letting go of a leader in another process."""

from __future__ import annotations

import asyncio

import pytest

from guest_queue.core.answers.cache import CachedAnswer
from guest_queue.core.answers.sharing import serve_from
from guest_queue.core.backends.base import Ticket
from guest_queue.core.records import RequestRecord, Status

from .test_relay_details import FakeShared, Process


@pytest.fixture
def shared() -> FakeShared:
    """The shared queue's answers as Redis would keep them, in memory; "q" answered by L1."""
    store = FakeShared()
    store.leaders["q"] = "L1"
    return store


def ticket(request_id: str, key: str | None = "q") -> Ticket:
    new = Ticket(RequestRecord(request_id=request_id, query="Q"))
    new.share.cache_key = key
    return new


def test_a_finished_leader_is_followed_by_nobody(shared: FakeShared) -> None:
    here = Process(shared)
    leader = ticket("local-1")
    here.sharing.lead(leader)
    leader.record.mark_finished(Status.FAILED, "workflow_error", "broke")
    assert here.sharing.leader_of("q") is None
    assert here.sharing.follow(ticket("local-2"), "q") is False
    assert leader.share.followers == {}


async def test_when_the_last_follower_leaves_the_other_process_is_no_longer_read(
    shared: FakeShared,
) -> None:
    there = Process(shared)
    first, remote = there.follower()
    second = ticket("f2")
    assert there.relay.follow(second, None)  # follows the same stand-in
    await asyncio.sleep(0.01)
    assert remote.reader is not None
    for follower in (first, second):
        follower.record.mark_finished(Status.CANCELLED, "cancelled", None)
        assert there.sharing.finished(follower) == []
    # At once: a new request for the question does not follow a stand-in nobody reads.
    assert "q" not in there.sharing.inflight
    assert there.sharing.follow(ticket("f3"), "q") is False
    await asyncio.sleep(0.05)
    assert remote.reader.cancelled()
    there.close()


async def test_a_follower_still_there_keeps_the_reader(shared: FakeShared) -> None:
    there = Process(shared)
    first, remote = there.follower()
    second = ticket("f2")
    assert there.relay.follow(second, None)
    first.record.mark_finished(Status.CANCELLED, "cancelled", None)
    there.sharing.finished(first)
    await asyncio.sleep(0.05)
    assert there.sharing.inflight["q"] is remote
    assert remote.reader is not None and not remote.reader.done()
    there.close()


def test_a_waiting_follower_served_a_finished_answer_starts_now() -> None:
    waiting = ticket("f1")
    serve_from(waiting, CachedAnswer("text"))
    assert waiting.record.status is Status.PROCESSING
    assert waiting.record.started_mono is not None
    assert waiting.record.cached and waiting.place.wake.is_set()
    assert waiting.share.replay == CachedAnswer("text")


def test_a_live_follower_served_the_finished_answer_keeps_its_start_time() -> None:
    live = ticket("f1")
    live.record.mark_started()
    started = (live.record.started_at, live.record.started_mono)
    serve_from(live, CachedAnswer("text"))
    assert (live.record.started_at, live.record.started_mono) == started
