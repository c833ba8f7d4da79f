"""Cached answers and single flight: common questions never wait for a slot or run twice."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.answers.cache import CachedAnswer, question_key
from guest_queue.core.answers.sharing import serve_from
from guest_queue.core.backends.base import Ticket
from guest_queue.core.config import QueueConfig
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord, Status
from guest_queue.workflows.base import WorkflowError, WorkflowItem, WorkflowRequest

from .conftest import GateWorkflow, Stream, until


class MemoryCache:
    def __init__(self) -> None:
        self.data: dict[str, CachedAnswer] = {}
        self.broken = False
        self.hanging = False

    async def get(self, key: str) -> CachedAnswer | None:
        if self.broken:
            raise ConnectionError("cache down")
        if self.hanging:
            await asyncio.sleep(3600)
        return self.data.get(key)

    async def set(self, key: str, answer: CachedAnswer) -> None:
        self.data[key] = answer


class Echo:
    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        yield f"answer to {request.query}"


def make(workflow: Any, cache: MemoryCache, **config: Any) -> QueueManager:
    config.setdefault("position_update_interval_sec", 0.01)
    return QueueManager(QueueConfig(**config), workflow, cache=cache)


def test_question_keys() -> None:
    assert question_key("What is GeneStory?") == question_key("  what is   genestory ")
    assert question_key("WHAT IS DNA!!!") == "what is dna"
    nfd = unicodedata.normalize("NFD", "Xét nghiệm gen là gì?")
    assert question_key(nfd) == question_key("xét nghiệm gen là gì") == "xét nghiệm gen là gì"
    assert question_key("bán dữ liệu") != question_key("bạn dữ liệu")
    # "_" separates words like any punctuation ("\w" alone would keep it inside a word).
    # "_" is content, not a separator: only case, whitespace, NFKC and the ends fold.
    assert question_key("what_is__dna") != question_key("what is dna") == "what is dna"


async def test_a_cached_answer_streams_at_once_without_a_slot(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    cache.data["what is dna"] = CachedAnswer("DNA is a molecule.", ("What is a gene?",))
    manager = make(gate, cache, max_concurrent=1, max_queue_size=0)
    busy = Stream(manager, await manager.submit("slow question"))
    await until(lambda: gate.started)
    # The only slot is taken and the queue holds nobody: the cached answer still comes.
    hit = Stream(manager, await manager.submit("What is DNA?"))
    names = await hit.done()
    assert names == ["queued", "processing", "answer_chunk", "workflow_complete"]
    assert hit.events[0].data["queue_position"] == 1
    assert hit.events[2].data == "DNA is a molecule."
    assert hit.events[3].data == {"suggested_questions": ["What is a gene?"], "cached": True}
    status = manager.status()
    assert status["cache_hits"] == 1 and status["completed_requests"] == 1
    found = manager.lookup(hit.ticket.request_id)
    assert found is not None and found["cached"] is True
    assert gate.started == ["slow question"]
    gate.open(busy.ticket.request_id)
    await busy.done()


async def test_a_question_with_hidden_characters_is_never_shared(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    hidden = "What is DNA?\u200b"  # a zero-width space: looks like the common question
    cache.data[question_key(hidden)] = CachedAnswer("poisoned")
    cache.data["what is dna"] = CachedAnswer("DNA is a molecule.")
    manager = make(gate, cache, max_concurrent=2)
    # Neither served from the cache nor following an identical question in flight.
    streams = [Stream(manager, await manager.submit(hidden)) for _ in range(2)]
    await until(lambda: len(gate.started) == 2)
    for stream in streams:
        gate.open(stream.ticket.request_id)
        assert (await stream.done())[-1] == "workflow_complete"
        assert stream.events[-1].data["cached"] is False
    await asyncio.sleep(0.05)
    # Nor stored: the cache holds what it held.
    assert cache.data == {
        question_key(hidden): CachedAnswer("poisoned"),
        "what is dna": CachedAnswer("DNA is a molecule."),
    }
    assert manager.status()["cache_hits"] == 0


async def test_a_cache_hit_announces_no_wait(gate: GateWorkflow) -> None:
    """Its ``queued`` event says 0 s even when recent answers took long: it is answered at once."""
    cache = MemoryCache()
    cache.data["what is dna"] = CachedAnswer("DNA is a molecule.")
    manager = make(gate, cache, max_concurrent=1)
    manager.stats.processing_ms.add(13000)
    busy = Stream(manager, await manager.submit("slow question"))
    await until(lambda: gate.started)
    hit = Stream(manager, await manager.submit("What is DNA?"))
    await hit.done()
    assert hit.events[0].name == "queued"
    assert hit.events[0].data["estimated_wait_sec"] == 0
    gate.open(busy.ticket.request_id)
    await busy.done()


async def test_only_complete_successful_answers_are_stored() -> None:
    class Flaky:
        async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
            yield "partial "
            if request.query.startswith("fail"):
                raise WorkflowError("no")
            if request.query.startswith("slow"):
                await asyncio.sleep(10)
            yield "answer"

    cache = MemoryCache()
    manager = make(Flaky(), cache, request_timeout_sec=0.2)
    for query in ("fail now", "slow one", "good one"):
        await Stream(manager, await manager.submit(query)).done()
    gone = Stream(manager, await manager.submit("good two"))
    await gone.disconnect()
    await asyncio.sleep(0.05)
    assert list(cache.data) == ["good one"]
    assert cache.data["good one"] == CachedAnswer("partial answer", ())
    again = Stream(manager, await manager.submit("Good one?"))
    await again.done()
    assert again.events[-1].data["cached"] is True


async def test_a_complete_answer_is_stored_with_its_suggestions(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache)
    stream = Stream(manager, await manager.submit("Tell me more"))
    gate.open(stream.ticket.request_id)
    await stream.done()
    await until(lambda: "tell me more" in cache.data)
    assert cache.data["tell me more"] == CachedAnswer("Tell me more-0 Tell me more-1 ", ("more?",))


async def test_identical_questions_in_flight_run_the_workflow_once(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=3)
    streams = [Stream(manager, await manager.submit("Same question?")) for _ in range(3)]
    await until(lambda: gate.started)
    await asyncio.sleep(0.05)
    assert gate.started == ["Same question?"]
    assert manager.status()["queue_size"] == 2  # the followers wait for the leader
    # A follower of a leader already answering is told it is next (1), not further back.
    assert [s.positions()[0] for s in streams[1:]] == [1, 1]
    gate.open(streams[0].ticket.request_id)
    for stream in streams:
        assert (await stream.done())[-1] == "workflow_complete"
    answers = ["".join(e.data for e in s.events if e.name == "answer_chunk") for s in streams]
    assert answers == ["Same question?-0 Same question?-1 "] * 3
    assert [s.events[-1].data["cached"] for s in streams] == [False, True, True]
    status = manager.status()
    assert status["cache_hits"] == 2 and status["completed_requests"] == 3
    assert status["queue_size"] == status["active_requests"] == 0


async def test_a_follower_that_leaves_is_not_answered_again(gate: GateWorkflow) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    stays, leaves = [Stream(manager, await manager.submit("Q")) for _ in range(2)]
    await until(lambda: gate.started == ["Q"])
    assert list(leader.ticket.share.followers) == [stays.ticket, leaves.ticket]
    await leaves.disconnect()
    assert leaves.ticket.share.leader is None
    assert list(leader.ticket.share.followers) == [stays.ticket]
    gate.open(leader.ticket.request_id)
    assert (await leader.done())[-1] == "workflow_complete"
    assert (await stays.done())[-1] == "workflow_complete"
    assert leaves.ticket.record.status.value == "cancelled" and leaves.ticket.share.replay is None
    status = manager.status()
    assert status["completed_requests"] == 2 and status["cancelled_requests"] == 1
    assert status["total_requests"] == 3 and status["cache_hits"] == 1


async def test_followers_keep_the_answer_when_their_leader_goes_away_before_any_chunk() -> None:
    gate = GateWorkflow(chunks=0)
    manager = make(gate, MemoryCache(), max_concurrent=2)
    leader = Stream(manager, await manager.submit("Q"))
    followers = [Stream(manager, await manager.submit("Q")) for _ in range(2)]
    await until(lambda: gate.started == ["Q"])
    await leader.disconnect()
    manager.release(leader.ticket)  # what the response's close() does
    # The answer belongs to everyone following it: it runs on, and is not started again.
    await asyncio.sleep(0.05)
    assert gate.started == ["Q"] and gate.closed == []
    gate.open(leader.ticket.request_id)
    for follower in followers:
        assert (await follower.done())[-1] == "workflow_complete"
    await until(lambda: manager.status()["active_requests"] == 0)
    assert manager.status()["completed_requests"] == 3


async def test_near_duplicate_questions_share_an_answer_when_enabled() -> None:
    cache = MemoryCache()
    manager = make(Echo(), cache, cache_similarity=0.7)
    await Stream(manager, await manager.submit("How long do my results take?")).done()
    await asyncio.sleep(0.01)
    near = Stream(manager, await manager.submit("how long do results take"))
    await near.done()
    assert near.events[-1].data["cached"] is True
    assert near.events[-2].data == "answer to How long do my results take?"
    other = Stream(manager, await manager.submit("Is my data safe?"))
    await other.done()
    assert other.events[-1].data["cached"] is False


async def test_a_broken_cache_is_treated_as_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    cache = MemoryCache()
    cache.broken = True
    manager = make(Echo(), cache)
    stream = Stream(manager, await manager.submit("anything"))
    assert (await stream.done())[-1] == "workflow_complete"
    (record,) = [r for r in caplog.records if r.name == "guest_queue"]
    assert record.getMessage() == "Answer cache lookup failed; answering without it"
    assert record.levelname == "WARNING"
    assert record.exc_info and record.exc_info[0] is ConnectionError


async def test_a_failed_cache_write_is_logged_and_the_guest_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class ReadOnly(MemoryCache):
        async def set(self, key: str, answer: CachedAnswer) -> None:
            raise ConnectionError("cache is read-only")

    manager = make(Echo(), ReadOnly())
    stream = Stream(manager, await manager.submit("anything"))
    assert (await stream.done())[-1] == "workflow_complete"
    await until(lambda: any(r.getMessage() == "Answer cache write failed" for r in caplog.records))
    (record,) = [r for r in caplog.records if r.getMessage() == "Answer cache write failed"]
    assert record.levelname == "WARNING"
    assert record.exc_info and record.exc_info[0] is ConnectionError


async def test_a_hanging_cache_does_not_hold_the_guest() -> None:
    cache = MemoryCache()
    cache.hanging = True
    manager = make(Echo(), cache)
    started = asyncio.get_running_loop().time()
    stream = Stream(manager, await manager.submit("anything"))
    assert (await stream.done())[-1] == "workflow_complete"
    assert asyncio.get_running_loop().time() - started < 2


def test_a_waiting_follower_served_a_finished_answer_starts_now() -> None:
    waiting = Ticket(RequestRecord(request_id="f1", query="Q"))
    serve_from(waiting, CachedAnswer("text"))
    assert waiting.record.status is Status.PROCESSING
    assert waiting.record.started_mono is not None
    assert waiting.record.cached and waiting.place.wake.is_set()
    assert waiting.share.replay == CachedAnswer("text")


def test_a_live_follower_served_the_finished_answer_keeps_its_start_time() -> None:
    live = Ticket(RequestRecord(request_id="f1", query="Q"))
    live.record.mark_started()
    started = (live.record.started_at, live.record.started_mono)
    serve_from(live, CachedAnswer("text"))
    assert (live.record.started_at, live.record.started_mono) == started


async def test_an_answer_to_a_follow_up_is_never_kept_in_the_cache(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_concurrent=1)
    turns = (("user", "What is a gene?"), ("assistant", "A stretch of DNA."))
    follow_up = Stream(manager, await manager.submit("And a genome?", history=turns))
    await until(lambda: gate.started == ["And a genome?"])
    gate.open(follow_up.ticket.request_id)
    assert (await follow_up.done())[-1] == "workflow_complete"
    plain = Stream(manager, await manager.submit("Q"))
    gate.open(plain.ticket.request_id)
    await plain.done()
    # Only the question asked without history is kept: an answer in context is not
    # an answer to the bare words, under any key.
    await until(lambda: len(cache.data) == 1)
    await asyncio.sleep(0.05)
    assert len(cache.data) == 1
    await manager.close()
