"""What a process writes to Redis is its queue's own: a lease runs exactly the configured
time, and two queues sharing one Redis (two key prefixes) never mix their answers."""

from __future__ import annotations

import asyncio

from guest_queue.core.manager import QueueManager

from ..services import redis_prefix
from .conftest import Factory, GateWorkflow, Stream, admission, make_manager, until
from .test_answer_cache import MemoryCache
from .test_redis_followers import announced
from .test_redis_handoff import redis_ms


async def test_a_slots_lease_runs_exactly_the_configured_time(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    manager = shared(gate, max_concurrent=1, lease_sec=100)
    backend = admission(manager)
    before = await redis_ms(backend)
    stream = Stream(manager, await manager.submit("r0"))
    # Taken by the entry, or renewed since (the next pass due is 33 s away).
    expiry = await backend.client.zscore(backend.keys[2], stream.ticket.request_id)
    after = await redis_ms(backend)
    assert expiry is not None and before + 100_000 <= expiry <= after + 100_000
    gate.open(stream.ticket.request_id)
    await stream.done()


async def test_a_guest_of_another_queue_on_the_same_redis_never_follows_this_queues_answer(
    shared: Factory,
    gate: GateWorkflow,
    redis_test_url: str,
) -> None:
    a, a2 = shared(gate, MemoryCache(), max_concurrent=2), shared(gate, MemoryCache())
    leader = Stream(a, await a.submit("Q"))
    await until(lambda: gate.started == ["Q"])
    async for prefix in redis_prefix(redis_test_url):
        options = {"lease_sec": 1.5, "timeout_sec": 0.25, "url": redis_test_url, "prefix": prefix}
        other = make_manager(gate, backend="redis", backend_options=options, max_concurrent=2)
        b = QueueManager(other.config, gate, cache=MemoryCache())
        b.start()
        try:
            await announced(a2)  # a process of the same queue has heard who answers Q
            # More than one of a's renewal passes: b would have heard a's list by now.
            await asyncio.sleep(0.7)
            assert b.relay is not None and b.relay.shared.leader("q") is None
            # The other queue's guest gets an answer of its own, at once.
            mine = Stream(b, await b.submit("Q"))
            await until(lambda: gate.started == ["Q", "Q"], timeout=1)
            gate.open(mine.ticket.request_id)
            assert (await mine.done())[-1] == "workflow_complete"
        finally:
            await asyncio.wait_for(b.close(), 10)
    gate.open(leader.ticket.request_id)
    assert (await leader.done())[-1] == "workflow_complete"
