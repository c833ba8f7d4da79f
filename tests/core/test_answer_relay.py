"""Single flight across processes: the answer relay against an in-memory shared store.

``FakeShared`` stands in for the Redis side (``SharedAnswers``): it keeps the
relayed events per leader and can be told to fail reads, to say a leader is
dead, or to lose a ``want``; each case checks what the followers end with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from guest_queue.core import events as ev
from guest_queue.core.answers import relay as relay_module
from guest_queue.core.answers.relay import AnswerRelay, ending_event, ending_of
from guest_queue.core.answers.sharing import AnswerSharing, RemoteLeader
from guest_queue.core.backends.base import Ticket
from guest_queue.core.endings import Ending
from guest_queue.core.eventlog import LogTrimmed
from guest_queue.core.records import RequestRecord, Status

from .conftest import until
from .test_answer_cache import MemoryCache

Entries = list[tuple[int, ev.Event]]
STOPPED = "The answer this request was waiting for stopped; please ask again."


class FakeShared:
    """An in-memory ``SharedAnswers``: one store seen by every 'process'."""

    def __init__(self) -> None:
        self.leaders: dict[str, str] = {}
        self.registered: list[tuple[str, str]] = []
        self.unregistered: list[tuple[str, str]] = []
        self.wants: list[str] = []
        #: Raised by the next wants, in turn (None: heard).
        self.want_failures: list[Exception | None] = []
        self.on_want: Callable[[str], None] | None = None
        self.log: dict[str, Entries] = {}
        #: What the next reads return (or raise), before the log is read.
        self.read_script: list[Entries | Exception] = []
        self.reads = 0
        #: What the next liveness checks say (or raise), and events to add after each.
        self.alive_script: list[tuple[bool | Exception, Entries]] = []
        self.alive_after = True
        self.alive_calls = 0

    def leader(self, key: str) -> str | None:
        return self.leaders.get(key)

    def register(self, key: str, leader_id: str) -> None:
        self.registered.append((key, leader_id))

    def unregister(self, key: str, leader_id: str) -> None:
        self.unregistered.append((key, leader_id))

    async def want(self, leader_id: str) -> None:
        self.wants.append(leader_id)
        failure = self.want_failures.pop(0) if self.want_failures else None
        if failure is not None:
            raise failure
        if self.on_want is not None:
            self.on_want(leader_id)

    async def listen_wants(self, on_want: Callable[[str], None]) -> None:
        self.on_want = on_want

    def append(self, leader_id: str, seq: int, event: ev.Event) -> None:
        self.log.setdefault(leader_id, []).append((seq, event))

    async def read(self, leader_id: str, after: int, block_sec: float) -> Entries:
        self.reads += 1
        if self.read_script:
            item = self.read_script.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        entries = [(s, e) for s, e in self.log.get(leader_id, []) if s > after]
        if not entries:
            await asyncio.sleep(block_sec)
            entries = [(s, e) for s, e in self.log.get(leader_id, []) if s > after]
        return entries

    async def alive(self, leader_id: str) -> bool:
        self.alive_calls += 1
        if not self.alive_script:
            return self.alive_after
        answer, then = self.alive_script.pop(0)
        self.log.setdefault(leader_id, []).extend(then)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def run(self) -> None:
        pass


class Process:
    """One process's single-flight side: its sharing table and its relay."""

    def __init__(self, shared: FakeShared, local: str = "local") -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.fallen: list[tuple[list[Ticket], Ending]] = []
        self.sharing = AnswerSharing(MemoryCache(), None, self.spawn, 10)
        self.relay = AnswerRelay(
            self.sharing,
            shared,
            self.spawn,
            lambda tickets, ending: self.fallen.append((tickets, ending)),
            lambda request_id: request_id.startswith(local),
        )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    def follower(self, key: str = "q", request_id: str = "f1") -> tuple[Ticket, RemoteLeader]:
        ticket = Ticket(RequestRecord(request_id=request_id, query="Q"))
        ticket.share.cache_key = key
        remote = self.relay.leader_of(key)
        assert remote is not None
        assert self.relay.follow(ticket, remote)
        return ticket, remote

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


def chunk(text: str) -> ev.Event:
    return ev.Event(ev.ANSWER_CHUNK, text)


def done(suggested: list[str] | None = None) -> ev.Event:
    return ending_event(finished_leader(Ending.completed({"suggested_questions": suggested or []})))


def finished_leader(ending: Ending | None, status: Status = Status.COMPLETED) -> Ticket:
    leader = Ticket(RequestRecord(request_id="L1", query="Q"))
    leader.ending = ending
    leader.record.mark_finished(status, None, None)
    return leader


@pytest.fixture
def shared() -> FakeShared:
    store = FakeShared()
    store.leaders["q"] = "L1"
    return store


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quiet answer is checked on every 20 ms instead of every second."""
    monkeypatch.setattr(relay_module, "QUIET_CHECK_SEC", 0.02)


async def settled(process: Process, remote: RemoteLeader) -> None:
    await until(lambda: remote.record.status.is_terminal)
    # Completed: the follower has the answer; otherwise it went back in line.


def lost(process: Process, ticket: Ticket, remote: RemoteLeader, message: str) -> None:
    """The follower was sent back in line with ``message``; the stand-in ended the same way."""
    [(tickets, ending)] = process.fallen
    assert tickets == [ticket]
    assert ending == Ending.failed(ev.CODE_UNAVAILABLE, message)
    assert remote.record.status is Status.FAILED
    assert (remote.record.error_code, remote.record.error_message) == (ev.CODE_UNAVAILABLE, message)


def answered(process: Process, ticket: Ticket, text: str) -> None:
    """The follower streams the leader's completed answer; nobody goes back in line."""
    [(tickets, ending)] = process.fallen
    assert tickets == [] and ending.status is Status.COMPLETED
    assert ticket.share.replay is not None and ticket.share.replay.text == text


# -- what is relayed, and how it ends ---------------------------------------------------


@pytest.mark.parametrize(
    "ending",
    [
        Ending.completed({"suggested_questions": ["Why?"]}),
        Ending.failed(ev.CODE_WORKFLOW_ERROR, "The workflow broke."),
        Ending.silent(Status.CANCELLED, "cancelled", "The guest left."),
    ],
    ids=["completed", "failed", "no-event"],
)
def test_the_leaders_ending_crosses_to_the_followers_process_unchanged(ending: Ending) -> None:
    event = ending_event(finished_leader(ending, ending.status))
    assert event.is_terminal
    assert event.name == (ending.event.name if ending.event is not None else ev.ERROR)
    assert ending_of(event) == ending


def test_a_leader_that_ended_without_an_ending_is_relayed_as_an_error() -> None:
    event = ending_event(finished_leader(None, Status.FAILED))
    assert event.name == ev.ERROR
    assert ending_of(event) == Ending(Status.FAILED, None, None, None)


async def test_the_answer_is_relayed_in_order_and_the_follower_gets_all_of_it(
    shared: FakeShared, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "ANNOUNCE_AFTER_SEC", 0.01)
    here, there = Process(shared, local="L"), Process(shared)
    leader = Ticket(RequestRecord(request_id="L1", query="Q"))
    leader.share.cache_key = "q"
    here.sharing.lead(leader)
    here.relay.started(leader)
    await here.relay.run()  # the fake only hooks the wants up
    assert leader.share.answer_parts is not None
    leader.share.answer_parts += ["a", "b"]
    ticket, remote = there.follower()
    await until(lambda: len(shared.log.get("L1", [])) == 1)
    # A second ask (another follower's process) starts no second relay (private: the ask's handler,
    # fed here without Redis).
    here.relay._wanted("L1")
    here.relay._wanted("unknown")  # nobody leads it here: ignored
    leader.share.answer_parts.append("c")
    leader.place.moved.set()
    await until(lambda: len(shared.log["L1"]) == 2)
    leader.ending = Ending.completed({"suggested_questions": ["Why?"]})
    leader.record.mark_finished(Status.COMPLETED, None, None)
    leader.place.moved.set()
    await settled(there, remote)
    assert [seq for seq, _ in shared.log["L1"]] == [1, 2, 3]
    assert [e.name for _, e in shared.log["L1"]] == [ev.ANSWER_CHUNK] * 2 + [ev.WORKFLOW_COMPLETE]
    answered(there, ticket, "abc")
    assert ticket.share.replay is not None and ticket.share.replay.suggested_questions == ("Why?",)
    here.close()
    there.close()


async def test_a_relay_wakes_on_its_own_when_nobody_says_the_answer_moved(
    shared: FakeShared, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "PUBLISH_WAKE_SEC", 0.05)
    here = Process(shared, local="L")
    leader = Ticket(RequestRecord(request_id="L1", query="Q"))
    leader.share.cache_key = "q"
    here.sharing.lead(leader)
    here.relay.leading["L1"] = leader
    # Private: the handler of a follower's ask heard on Redis, fed here without it.
    here.relay._wanted("L1")
    await asyncio.sleep(0.02)
    assert leader.share.answer_parts is not None
    leader.share.answer_parts.append("late")  # moved is not set
    await until(lambda: len(shared.log.get("L1", [])) == 1, timeout=1.0)
    here.close()


async def test_a_finished_leader_is_not_relayed(shared: FakeShared) -> None:
    here = Process(shared, local="L")
    leader = finished_leader(Ending.completed())
    here.relay.leading["L1"] = leader
    # Private: the handler of a follower's ask heard on Redis, fed here without it.
    here.relay._wanted("L1")
    assert here.tasks == [] and not here.relay.relays(leader)


# -- the leader's process: announcing --------------------------------------------------


@pytest.fixture
def announce_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "ANNOUNCE_AFTER_SEC", 0.01)


def leading(process: Process, request_id: str = "L1", key: str = "q") -> Ticket:
    ticket = Ticket(RequestRecord(request_id=request_id, query="Q"))
    ticket.share.cache_key = key
    process.sharing.lead(ticket)
    return ticket


async def test_a_leader_running_a_while_is_announced_and_taken_back_when_it_ends(
    shared: FakeShared, announce_soon: None
) -> None:
    here = Process(shared)
    leader = leading(here)
    here.relay.started(leader)
    await asyncio.sleep(0.05)
    assert shared.registered == [("q", "L1")]
    here.relay.ended(leader)
    assert shared.unregistered == [("q", "L1")]


async def test_a_leader_ending_before_its_announcement_is_never_announced(
    shared: FakeShared, announce_soon: None
) -> None:
    here = Process(shared)
    quick_one, finished_one = leading(here, "L1"), leading(here, "L2", "q2")
    here.relay.started(quick_one)
    here.relay.started(finished_one)
    assert set(here.relay.leading) == {"L1", "L2"}  # both lead: both would be announced
    here.relay.ended(quick_one)
    # Finished, its ending not yet handled: still not announced.
    finished_one.record.mark_finished(Status.COMPLETED, None, None)
    await asyncio.sleep(0.05)
    assert shared.registered == [] and shared.unregistered == []


async def test_a_request_that_does_not_lead_its_question_is_not_announced(
    shared: FakeShared, announce_soon: None
) -> None:
    here = Process(shared)
    leading(here, "L1")
    other = Ticket(RequestRecord(request_id="L2", query="Q"))
    other.share.cache_key = "q"
    here.relay.started(other)
    await asyncio.sleep(0.05)
    assert shared.registered == [] and here.relay.leading == {}


def test_a_request_without_a_key_follows_nobody(shared: FakeShared) -> None:
    there = Process(shared)
    ticket = Ticket(RequestRecord(request_id="f1", query="Q"))
    assert there.relay.follow(ticket, None) is False
    assert there.sharing.follow(ticket, None) is False


async def test_a_leader_here_is_followed_rather_than_one_elsewhere(shared: FakeShared) -> None:
    # The manager found the question answered only elsewhere, then awaited the guest's hold:
    # meanwhile this process may have started answering it too, or its leader here finished.
    here = Process(shared)
    local = leading(here, "L1")
    follower = Ticket(RequestRecord(request_id="f1", query="Q"))
    follower.share.cache_key = "q"
    assert here.relay.follow(follower, RemoteLeader("R1", "q")) is True
    assert follower.share.leader is local and here.sharing.inflight["q"] is local
    local.record.mark_finished(Status.COMPLETED, None, None)
    late = Ticket(RequestRecord(request_id="f2", query="Q"))
    late.share.cache_key = "q"
    assert here.relay.follow(late, None) is False  # nobody to follow: it lines up
    assert late.share.leader is None and shared.wants == []


# -- a follower's process: reading the relayed answer -----------------------------------


async def test_a_trimmed_answer_sends_the_followers_back_in_line(shared: FakeShared) -> None:
    there = Process(shared)
    shared.read_script = [LogTrimmed("gone")]
    ticket, remote = there.follower()
    await settled(there, remote)
    lost(there, ticket, remote, "Part of the answer was lost; please ask again.")
    there.close()


async def test_three_failed_reads_in_a_row_give_up_with_a_backoff(
    shared: FakeShared, caplog: pytest.LogCaptureFixture
) -> None:
    there = Process(shared)
    shared.read_script = [OSError("redis down")] * 5
    begun = time.monotonic()
    ticket, remote = there.follower()
    await settled(there, remote)
    elapsed = time.monotonic() - begun
    lost(there, ticket, remote, "The queue service is unreachable; please ask again.")
    assert shared.reads == 3
    # 0.1 s after the first failure, 0.2 s after the second.
    assert 0.28 <= elapsed < 1.5
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message == "Reading request L1's answer failed (redis down)"
    there.close()


async def test_failed_reads_count_only_in_a_row(shared: FakeShared) -> None:
    there = Process(shared)
    failure = OSError("blip")
    shared.read_script = [failure, failure, [(1, chunk("x"))], failure, failure, [(2, done())]]
    ticket, remote = there.follower()
    await settled(there, remote)
    answered(there, ticket, "x")
    there.close()


async def test_an_unreadable_ending_ends_the_followers_and_is_logged(
    shared: FakeShared, caplog: pytest.LogCaptureFixture
) -> None:
    there = Process(shared)
    shared.read_script = [[(1, ev.Event(ev.WORKFLOW_COMPLETE, {"no": "status"}))]]
    ticket, remote = there.follower()
    await settled(there, remote)
    [(tickets, ending)] = there.fallen
    assert tickets == [ticket]
    assert ending == Ending.silent(Status.CANCELLED, ev.CODE_UNAVAILABLE, STOPPED)
    assert (remote.record.status, remote.record.error_message) == (Status.CANCELLED, STOPPED)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "Following request L1 in another process failed"
    there.close()


async def test_a_quiet_leader_found_alive_is_followed_on(shared: FakeShared, quick: None) -> None:
    there = Process(shared)
    # Misses not in a row never add up; a liveness check that fails counts as alive.
    error = OSError("no answer")
    shared.alive_script = [(False, []), (True, []), (False, []), (error, []), (error, [])]
    shared.alive_script += [(error, []), (False, []), (True, [(1, chunk("y")), (2, done())])]
    ticket, remote = there.follower()
    await settled(there, remote)
    answered(there, ticket, "y")
    there.close()


async def test_news_from_the_leader_resets_the_misses(shared: FakeShared, quick: None) -> None:
    there = Process(shared)
    shared.alive_script = [(False, [(1, chunk("a"))]), (False, [(2, done())])]
    ticket, remote = there.follower()
    await settled(there, remote)
    answered(there, ticket, "a")
    there.close()


async def test_a_leader_found_nowhere_twice_in_a_row_is_taken_for_dead(
    shared: FakeShared, quick: None
) -> None:
    there = Process(shared)
    shared.alive_after = False
    ticket, remote = there.follower()
    await settled(there, remote)
    lost(there, ticket, remote, "The server answering this question stopped; please ask again.")
    assert shared.alive_calls == 2
    there.close()


async def test_an_unheard_ask_is_asked_again_until_the_answer_comes(
    shared: FakeShared, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue")
    here, there = Process(shared, local="L"), Process(shared)
    leader = leading(here)
    here.relay.leading["L1"] = leader
    await here.relay.run()
    shared.want_failures = [OSError("publish failed")]
    ticket, remote = there.follower()
    await until(lambda: len(shared.wants) >= 2)
    assert set(shared.wants) == {"L1"}
    assert here.relay.relays(leader)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "Could not ask for request L1's answer (publish failed)" in infos
    assert leader.share.answer_parts is not None
    leader.share.answer_parts.append("z")
    leader.ending = Ending.completed()
    leader.record.mark_finished(Status.COMPLETED, None, None)
    leader.place.moved.set()
    await settled(there, remote)
    answered(there, ticket, "z")
    here.close()
    there.close()


def keyed(request_id: str, key: str | None = "q") -> Ticket:
    new = Ticket(RequestRecord(request_id=request_id, query="Q"))
    new.share.cache_key = key
    return new


def test_a_finished_leader_is_followed_by_nobody(shared: FakeShared) -> None:
    here = Process(shared)
    leader = keyed("local-1")
    here.sharing.lead(leader)
    leader.record.mark_finished(Status.FAILED, "workflow_error", "broke")
    assert here.sharing.leader_of("q") is None
    assert here.sharing.follow(keyed("local-2"), "q") is False
    assert leader.share.followers == {}


async def test_when_the_last_follower_leaves_the_other_process_is_no_longer_read(
    shared: FakeShared,
) -> None:
    there = Process(shared)
    first, remote = there.follower()
    second = keyed("f2")
    assert there.relay.follow(second, None)  # follows the same stand-in
    await asyncio.sleep(0.01)
    assert remote.reader is not None
    for follower in (first, second):
        follower.record.mark_finished(Status.CANCELLED, "cancelled", None)
        assert there.sharing.finished(follower) == []
    # At once: a new request for the question does not follow a stand-in nobody reads.
    assert "q" not in there.sharing.inflight
    assert there.sharing.follow(keyed("f3"), "q") is False
    await asyncio.sleep(0.05)
    assert remote.reader.cancelled()
    there.close()


async def test_a_follower_still_there_keeps_the_reader(shared: FakeShared) -> None:
    there = Process(shared)
    first, remote = there.follower()
    second = keyed("f2")
    assert there.relay.follow(second, None)
    first.record.mark_finished(Status.CANCELLED, "cancelled", None)
    there.sharing.finished(first)
    await asyncio.sleep(0.05)
    assert there.sharing.inflight["q"] is remote
    assert remote.reader is not None and not remote.reader.done()
    there.close()
