"""Fair share in the core: the per-client cap, bounded followers, refusals by code."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from guest_queue.core.errors import ClientLimited, QueueFull
from guest_queue.core.fairness import ClientHolds
from guest_queue.core.manager import QueueManager

from .conftest import Factory, GateWorkflow, Stream, make_manager, until
from .test_answer_cache import MemoryCache, make


def test_holds_are_capped_per_client_and_released_once() -> None:
    holds = ClientHolds(2)
    assert holds.hold("a", "1") is holds.hold("a", "2") is holds.hold("a", "2") is None
    assert holds.hold("a", "3") == "client_limit"
    assert holds.hold("b", "4") is None and holds.count("a") == 2
    holds.release("1")
    holds.release("1")  # a second release of the same request changes nothing
    assert holds.count("a") == 1 and holds.hold("a", "3") is None
    assert holds.hold("a", "5") == "client_limit"
    for rid in "2345":
        holds.release(rid)
    assert holds.clients == 0
    assert ClientHolds(0).hold("a", "x") is None and ClientHolds(1).hold("", "x") is None


def test_a_group_holds_its_multiple_of_the_cap_whichever_of_its_clients_ask() -> None:
    holds = ClientHolds(2)
    net = [("net", 2)]  # four open requests for the whole group
    assert [holds.hold(c, f"{c}{i}", net) for c in "ab" for i in range(2)] == [None] * 4
    # Neither c nor a third request of a is at its own cap: the group is at its own.
    assert holds.hold("c", "c0", net) == "network_limit" and holds.count("c") == 0
    assert holds.hold("a", "a2", net) == "client_limit"
    assert holds.refusal("c", net) == "network_limit" and holds.refusal("c") is None
    holds.release("b0")
    assert holds.hold("c", "c0", net) is None and holds.count("net") == 4
    for rid in ("a0", "a1", "b1", "c0"):
        holds.release(rid)
    assert holds.clients == 0


async def submit_many(manager: QueueManager, n: int, client: str, query: str = "q") -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        try:
            out.append(Stream(manager, await manager.submit(f"{query}{i}", client_hint=client)))
        except (ClientLimited, QueueFull) as exc:
            out.append(exc)
    return out


async def test_a_client_has_at_most_its_cap_open_and_others_are_unaffected(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, max_concurrent=1, max_queue_size=50, max_per_client=3)
    flood = await submit_many(manager, 10, "flooder")
    accepted = [s for s in flood if isinstance(s, Stream)]
    refused = [e for e in flood if not isinstance(e, Stream)]
    assert len(accepted) == 3 and all(isinstance(e, ClientLimited) for e in refused)
    assert refused[0].status_code == 429 and refused[0].retry_after >= 1
    other = Stream(manager, await manager.submit("other", client_hint="guest"))
    status = manager.status()
    assert status["rejected_client_limit"] == 7 and status["rejected_requests"] == 7
    assert status["queue_size"] == 3  # refusals take no place; the other guest is 4th
    assert status["total_requests"] == 4
    # One of the flooder's requests ends (the client leaves): one more may come in.
    await until(lambda: accepted[1].events)
    await accepted[1].disconnect()
    await until(lambda: manager.admission.client_count("flooder") == 2)
    again = Stream(manager, await manager.submit("again", client_hint="flooder"))
    with pytest.raises(ClientLimited):
        await manager.submit("too many", client_hint="flooder")
    for stream in [*accepted, other, again]:
        gate.open(stream.ticket.request_id)
    for stream in [accepted[0], accepted[2], other, again]:
        assert (await stream.done())[-1] == "workflow_complete"
    assert manager.admission.client_count("flooder") == 0
    await manager.close()


async def test_every_way_of_ending_releases_the_client_exactly_once(gate: GateWorkflow) -> None:
    manager = make_manager(
        gate, max_concurrent=1, max_per_client=2, request_timeout_sec=0.2, max_queue_wait_sec=0.3
    )
    quitting = make_manager(gate, max_concurrent=1, max_per_client=2, shutdown_grace_sec=0)
    timed_out = Stream(manager, await manager.submit("slow", client_hint="c"))
    waited_out = Stream(manager, await manager.submit("waits", client_hint="c"))
    assert (await timed_out.done())[-1] == "timeout"
    assert (await waited_out.done())[-1] == "timeout"
    assert manager.admission.client_count("c") == 0
    # Released by the response closing before its stream ever started.
    never_read = await manager.submit("never read", client_hint="c")
    manager.release(never_read)
    manager.release(never_read)
    await until(lambda: manager.admission.client_count("c") == 0)
    await manager.close()
    # And by shutdown, processing or waiting.
    streams = [Stream(quitting, await quitting.submit(f"s{i}", client_hint="c")) for i in range(2)]
    await until(lambda: all(s.events for s in streams))
    await quitting.close()
    for stream in streams:
        assert (await stream.done())[-1] == "error"
    assert quitting.admission.client_count("c") == 0


async def test_followers_count_toward_the_cap_and_are_bounded(gate: GateWorkflow) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1, max_queue_size=4, max_per_client=3)
    same = [Stream(manager, await manager.submit("Same?", client_hint="one")) for _ in range(3)]
    with pytest.raises(ClientLimited):
        await manager.submit("Same?", client_hint="one")
    assert manager.sharing is not None and manager.sharing.following == 2
    # Followers from other clients, up to the queue's size in all.
    others = [Stream(manager, await manager.submit("Same?", client_hint=f"g{i}")) for i in range(2)]
    with pytest.raises(QueueFull):
        await manager.submit("Same?", client_hint="g9")
    assert manager.status()["rejected_queue_full"] == 1
    # A follower leaving is one dict removal; the bound makes room again.
    await until(lambda: others[0].events)
    await others[0].disconnect()
    await until(lambda: manager.sharing is not None and manager.sharing.following == 3)
    late = Stream(manager, await manager.submit("Same?", client_hint="g9"))
    gate.open(same[0].ticket.request_id)
    for stream in [*same, others[1], late]:
        assert (await stream.done())[-1] == "workflow_complete"
    assert manager.sharing.following == 0
    await manager.close()


async def test_a_groups_cap_holds_for_its_clients_in_line_and_following(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1, max_per_client=1)
    net = (("net", 2),)  # two open requests for the whole group
    leader = Stream(manager, await manager.submit("Same?", client_hint="a", client_groups=net))
    follower = Stream(manager, await manager.submit("Same?", client_hint="b", client_groups=net))
    for query in ("Same?", "Other?"):  # following, or lining up: the group is full
        with pytest.raises(ClientLimited) as refused:
            await manager.submit(query, client_hint="c", client_groups=net)
        assert "from your network" in refused.value.message
    outsider = Stream(manager, await manager.submit("Other?", client_hint="c"))
    assert manager.status()["rejected_client_limit"] == 2
    gate.open(leader.ticket.request_id)
    for stream in (leader, follower):
        assert (await stream.done())[-1] == "workflow_complete"
    assert manager.admission.client_count("net") == 0
    late = Stream(manager, await manager.submit("Late?", client_hint="d", client_groups=net))
    for stream in (outsider, late):
        gate.open(stream.ticket.request_id)
        assert (await stream.done())[-1] == "workflow_complete"
    await manager.close()


async def test_followers_see_their_leaders_moves_without_being_visited(
    gate: GateWorkflow,
) -> None:
    manager = make(gate, MemoryCache(), max_concurrent=1, max_per_client=0)
    head = Stream(manager, await manager.submit("head"))
    ahead = Stream(manager, await manager.submit("ahead"))
    leader = Stream(manager, await manager.submit("Same?"))
    followers = [Stream(manager, await manager.submit("Same?")) for _ in range(20)]
    await until(lambda: all(f.positions() == [2] for f in followers))
    assert all(f.ticket.position == 2 for f in followers)
    assert leader.ticket.share.followers and not any(f.ticket.share.followers for f in followers)
    gate.open(head.ticket.request_id)
    # The leader moves to 1: every follower's stream reports it, from the leader's one event.
    await until(lambda: all(f.positions() == [2, 1] for f in followers))
    assert leader.positions() == [2, 1]
    gate.open(ahead.ticket.request_id)
    gate.open(leader.ticket.request_id)
    for stream in followers:
        assert (await stream.done())[-1] == "workflow_complete"
    await manager.close()


async def test_a_replayed_cached_answer_counts_until_it_is_streamed(gate: GateWorkflow) -> None:
    cache = MemoryCache()
    manager = make(gate, cache, max_per_client=1)
    first = Stream(manager, await manager.submit("Cached?", client_hint="c"))
    gate.open(first.ticket.request_id)
    await first.done()
    await until(lambda: "cached" in cache.data)
    hit = await manager.submit("Cached?", client_hint="c")
    with pytest.raises(ClientLimited):
        await manager.submit("Cached?", client_hint="c")
    assert (await Stream(manager, hit).done())[-1] == "workflow_complete"
    assert manager.admission.client_count("c") == 0
    await manager.close()


# -- the shared queue ---------------------------------------------------------------


async def test_the_cap_is_global_across_processes(shared: Factory, gate: GateWorkflow) -> None:
    a = shared(gate, max_concurrent=1, max_per_client=2)
    b = shared(gate, max_concurrent=1, max_per_client=2)
    first = Stream(a, await a.submit("a1", client_hint="c"))
    second = Stream(b, await b.submit("b1", client_hint="c"))
    for manager in (a, b):
        with pytest.raises(ClientLimited):
            await manager.submit("more", client_hint="c")
    other = Stream(b, await b.submit("other", client_hint="someone else"))
    await until(lambda: second.events)
    await second.disconnect()
    await until(lambda: not admission_busy(b))
    third = Stream(a, await a.submit("a2", client_hint="c"))
    for stream in (first, other, third):
        gate.open(stream.ticket.request_id)
        assert (await stream.done())[-1] == "workflow_complete"
    # Each process publishes its figures with its renewals: b's refusal shows up in a's.
    async with asyncio.timeout(5):
        while (await a.shared_status())["rejected_client_limit"] != 2:
            await asyncio.sleep(0.05)


def admission_busy(manager: QueueManager) -> bool:
    return bool(getattr(manager.admission, "_leaving", None))


async def test_followers_hold_the_cap_in_redis_too(shared: Factory, gate: GateWorkflow) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=2)
    b = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=2)
    leader = Stream(a, await a.submit("Same?", client_hint="c"))
    follower = Stream(a, await a.submit("Same?", client_hint="c"))
    with pytest.raises(ClientLimited):
        await b.submit("Another?", client_hint="c")
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await leader.done()
    await until(lambda: not admission_busy(a))
    Stream(b, await b.submit("Another?", client_hint="c"))


async def test_a_dead_process_stops_counting_against_its_clients_within_the_lease(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, lease_sec=1.0, max_per_client=2)
    b = shared(gate, max_concurrent=1, lease_sec=1.0, max_per_client=2)
    Stream(a, await a.submit("Same?", client_hint="c"))
    Stream(a, await a.submit("Same?", client_hint="c"))  # a follower, held with a lease
    with pytest.raises(ClientLimited):
        await b.submit("more", client_hint="c")

    # Process a stops dead: no renewals, no goodbye to Redis.
    for task in list(a.stopper.background):
        task.cancel()
    a.admission.leave = lambda ticket: None  # type: ignore[method-assign]
    died = time.monotonic()
    while True:
        try:
            healed = Stream(b, await b.submit("more", client_hint="c"))
            break
        except ClientLimited:
            assert time.monotonic() - died < 2.0  # within the lease and a renewal pass
            await asyncio.sleep(0.1)
    await until(lambda: gate.started[-1:] == ["more"])
    gate.open(healed.ticket.request_id)
    assert (await healed.done())[-1] == "workflow_complete"


async def test_a_groups_cap_holds_across_processes_and_heals_when_one_dies(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, MemoryCache(), max_concurrent=1, lease_sec=1.0, max_per_client=1)
    b = shared(gate, max_concurrent=1, lease_sec=1.0, max_per_client=1)
    net = (("net", 2),)
    Stream(a, await a.submit("Same?", client_hint="x", client_groups=net))
    Stream(a, await a.submit("Same?", client_hint="y", client_groups=net))  # held, no place
    with pytest.raises(ClientLimited) as refused:
        await b.submit("more", client_hint="z", client_groups=net)
    assert "from your network" in refused.value.message
    outsider = Stream(b, await b.submit("more", client_hint="z"))

    # Process a stops dead: its two requests stop counting against the group in time.
    for task in list(a.stopper.background):
        task.cancel()
    a.admission.leave = lambda ticket: None  # type: ignore[method-assign]
    died = time.monotonic()
    while True:
        try:
            healed = Stream(b, await b.submit("again", client_hint="z2", client_groups=net))
            break
        except ClientLimited:
            assert time.monotonic() - died < 2.0
            await asyncio.sleep(0.1)
    for stream in (outsider, healed):
        gate.open(stream.ticket.request_id)
        assert (await stream.done())[-1] == "workflow_complete"
