"""What a refused guest is told: the reason in words, and when to try again."""

from __future__ import annotations

import asyncio

import pytest

from guest_queue.core.answers.cache import CachedAnswer
from guest_queue.core.backends.base import Ticket
from guest_queue.core.errors import ClientLimited, NotAccepting, QueueFull
from guest_queue.core.manager import QueueManager

from .conftest import Factory, GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache, make

FULL = "Too many guests are asking right now; please try again shortly."
RESTARTING = "The server is restarting; please try again."


def at_cap(n: int) -> str:
    noun = "question" if n == 1 else "questions"
    return f"You already have {n} {noun} open; please wait for an answer before asking more."


async def refused(manager: QueueManager, query: str, client: str) -> Exception:
    with pytest.raises((QueueFull, ClientLimited, NotAccepting)) as caught:
        await manager.submit(query, client_hint=client)
    return caught.value


@pytest.mark.parametrize("cap", [1, 2])
async def test_a_client_at_its_cap_is_told_how_many_it_has_open(
    gate: GateWorkflow, cap: int
) -> None:
    manager = make_manager(
        gate, max_concurrent=2, max_per_client=cap, request_timeout_sec=4, shutdown_grace_sec=0
    )
    for i in range(cap):
        Stream(manager, await manager.submit(f"q{i}", client_hint="c"))
    refusal = await refused(manager, "one more", "c")
    assert isinstance(refusal, ClientLimited) and refusal.message == at_cap(cap)
    # Before any answer finished: the time limit (at most 5 s) shared by the 2 slots.
    assert refusal.retry_after == 2
    await manager.close()


async def test_a_follower_at_its_clients_cap_in_redis_is_refused(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=1)
    b = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=1)
    leader = Stream(a, await a.submit("Same?", client_hint="other"))
    follower = Stream(a, await a.submit("Same?", client_hint="c"))  # held in Redis for c
    refusal = await refused(b, "Another?", "c")
    assert isinstance(refusal, ClientLimited) and refusal.message == at_cap(1)
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"


async def test_a_full_shared_line_and_a_full_follower_table_say_so(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, max_queue_size=1, request_timeout_sec=3)
    Stream(a, await a.submit("running"))
    Stream(a, await a.submit("waiting"))
    Stream(a, await a.submit("running"))  # a follower: the table of followers is full now
    for query in ("new", "running"):  # a new question, and one more follower
        refusal = await refused(a, query, "c")
        assert isinstance(refusal, QueueFull) and refusal.message == FULL
        assert refusal.retry_after == 3


async def test_a_drain_that_starts_while_a_guest_is_being_let_in_refuses_it() -> None:
    manager: QueueManager | None = None

    class Restarting(GateWorkflow):
        async def is_available(self) -> bool:
            assert manager is not None
            manager.begin_drain()  # SIGTERM arrives while the service is being probed
            await asyncio.sleep(0.01)
            return True

    manager = make_manager(Restarting())
    refusal = await refused(manager, "q", "c")
    assert isinstance(refusal, NotAccepting) and refusal.message == RESTARTING
    assert refusal.retry_after == 5
    refusal = await refused(manager, "q again", "c")  # and once it is draining
    assert isinstance(refusal, NotAccepting) and refusal.message == RESTARTING
    assert refusal.retry_after == 5
    await until(lambda: manager is not None and manager.status()["rejected_requests"] == 2)


async def test_a_drain_that_starts_during_the_cache_lookup_refuses_the_guest(
    gate: GateWorkflow,
) -> None:
    manager: QueueManager | None = None

    class SlowCache(MemoryCache):
        async def get(self, key: str) -> CachedAnswer | None:
            assert manager is not None
            manager.begin_drain()  # SIGTERM arrives while the cache is being read
            await asyncio.sleep(0.01)
            return await super().get(key)

    # No queue of its own, so no follower either: a miss would be told the line is full.
    manager = make(gate, SlowCache(), max_queue_size=0)
    refusal = await refused(manager, "not cached", "c")
    assert isinstance(refusal, NotAccepting) and refusal.message == RESTARTING
    status = manager.status()
    assert status["rejected_requests"] == 1 and status["rejected_queue_full"] == 0
    assert status["total_requests"] == 0


async def test_a_drain_that_starts_while_a_follower_is_held_refuses_it(
    gate: GateWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1, shutdown_grace_sec=5)
    leader = Stream(manager, await manager.submit("Same?"))
    await until(lambda: gate.started == ["Same?"])
    hold = manager.admission.hold

    async def draining_hold(ticket: Ticket) -> str | None:
        manager.begin_drain()  # SIGTERM arrives while the follower's hold is taken
        await until(lambda: not manager.accepting)
        return await hold(ticket)

    monkeypatch.setattr(manager.admission, "hold", draining_hold)
    refusal = await refused(manager, "Same?", "c")
    assert isinstance(refusal, NotAccepting) and refusal.message == RESTARTING
    assert manager.status()["total_requests"] == 1 and manager.queue_size == 0
    gate.open(leader.ticket.request_id)
    assert (await leader.done())[-1] == "workflow_complete"
    assert leader.ticket.share.followers == {}


async def test_a_client_at_its_cap_cannot_follow_and_a_follow_stays_counted_past_a_lease(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=2, max_per_client=1, lease_sec=1.0)
    b = shared(gate, MemoryCache(), max_concurrent=2, max_per_client=1, lease_sec=1.0)
    leader = Stream(a, await a.submit("Same?", client_hint="other"))
    mine = Stream(a, await a.submit("Mine?", client_hint="c"))
    # At its cap, the client may not follow an answer either (the hold is refused).
    refusal = await refused(a, "Same?", "c")
    assert isinstance(refusal, ClientLimited) and refusal.message == at_cap(1)
    gate.open(mine.ticket.request_id)
    await mine.done()
    await until(lambda: a.status()["active_requests"] == 1)
    follower = Stream(a, await a.submit("Same?", client_hint="d"))
    await asyncio.sleep(1.6)  # past a lease: the hold is renewed like any place
    refusal = await refused(b, "Another?", "d")
    assert isinstance(refusal, ClientLimited)
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"


async def test_a_guest_refused_for_a_full_line_keeps_its_own_allowance(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_size=1, max_per_client=1)
    running = Stream(manager, await manager.submit("q1", client_hint="a"))
    waiting = Stream(manager, await manager.submit("q2", client_hint="b"))
    refusal = await refused(manager, "q3", "c")
    assert isinstance(refusal, QueueFull) and refusal.message == FULL
    gate.open(running.ticket.request_id)
    await running.done()
    await until(lambda: waiting.ticket.record.status.name == "PROCESSING")
    # The refused request held nothing: the same guest now gets the free place in line.
    later = Stream(manager, await manager.submit("q4", client_hint="c"))
    gate.open(waiting.ticket.request_id)
    gate.open(later.ticket.request_id)
    assert (await later.done())[-1] == "workflow_complete"
    await manager.close()


async def test_with_no_line_a_guest_gets_a_free_slot_or_is_refused(gate: GateWorkflow) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_size=0)
    running = Stream(manager, await manager.submit("q1", client_hint="a"))
    refusal = await refused(manager, "q2", "b")
    assert isinstance(refusal, QueueFull) and refusal.message == FULL
    gate.open(running.ticket.request_id)
    await running.done()
    after = Stream(manager, await manager.submit("q3", client_hint="b"))
    gate.open(after.ticket.request_id)
    assert (await after.done())[-1] == "workflow_complete"
    await manager.close()


class CountingCache(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def get(self, key: str) -> CachedAnswer | None:
        self.lookups += 1
        return await super().get(key)


async def test_a_client_at_its_cap_is_refused_before_the_cache_is_asked(
    gate: GateWorkflow,
) -> None:
    cache = CountingCache()
    manager = make(gate, cache, max_concurrent=1, max_per_client=1)
    first = Stream(manager, await manager.submit("first", client_hint="flooder"))
    lookups = cache.lookups
    with pytest.raises(ClientLimited) as refused:
        await manager.submit("second", client_hint="flooder")
    assert str(refused.value) == (
        "You already have 1 question open; please wait for an answer before asking more."
    )
    # A flooding client costs no cache lookup (a Redis round trip in production).
    assert cache.lookups == lookups
    assert manager.status()["rejected_client_limit"] == 1
    gate.open(first.ticket.request_id)
    await first.done()
    await manager.close()
