"""The order of the line, local and on Redis alike: tiers with weights, fair by cost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import pytest

from guest_queue.core.backends.base import Ticket
from guest_queue.core.backends.local import LocalAdmission
from guest_queue.core.manager import QueueManager
from guest_queue.core.records import RequestRecord

from .conftest import Factory, GateWorkflow, Stream, admission, make_manager, until

Build = Callable[..., QueueManager]
MEMBERS = {"member": 4, "guest": 1}


async def ask(manager: QueueManager, query: str, client: str = "", tier: str = "guest") -> Stream:
    ticket = await manager.submit(query, client_hint=client or None, tier=tier)
    return Stream(manager, ticket)


async def occupied(manager: QueueManager, gate: GateWorkflow) -> Stream:
    """The only slot taken by a request ("first") whose answer waits for its gate."""
    first = await ask(manager, "first")
    await until(lambda: gate.started == ["first"])
    return first


async def started_in_order(gate: GateWorkflow, streams: list[Stream], count: int) -> list[str]:
    """Let the requests through one at a time; the queries in the order they started."""
    for _ in range(count):
        before = len(gate.started)
        running = [s for s in streams if s.ticket.request.query == gate.started[-1]]
        gate.open(running[0].ticket.request_id)
        await until(lambda before=before: len(gate.started) > before)
    return gate.started


async def idle(manager: QueueManager) -> None:
    """Wait until no slot is taken (Redis: once the last one given back has landed)."""
    if manager.admission.name != "redis":
        assert not manager.admission.active
        return
    backend = admission(manager)

    async def taken() -> int:
        return int(await backend.client.scard(backend.keys[1]))  # type: ignore[misc]

    async with asyncio.timeout(5):
        while await taken():
            await asyncio.sleep(0.01)


async def charged(manager: QueueManager, client: str) -> None:
    """Wait until the client's use is charged where the queue keeps it (Redis: a key)."""
    if manager.admission.name != "redis" or not manager.admission.ordering.fair:
        return
    backend = admission(manager)
    key = backend._usage_key(client)

    async def landed() -> bool:
        return bool(await backend.client.exists(key))

    async with asyncio.timeout(5):
        while not await landed():
            await asyncio.sleep(0.01)


async def test_a_member_goes_ahead_of_waiting_guests_and_they_are_told(
    build: Build, gate: GateWorkflow
) -> None:
    manager = build(gate, max_concurrent=1, tiers=MEMBERS)
    first = await occupied(manager, gate)
    guests = [await ask(manager, f"guest{i}") for i in range(3)]
    assert [g.ticket.position for g in guests] == [1, 2, 3]
    member = await ask(manager, "member", tier="member")
    assert member.ticket.position == 1
    # Each guest's position grew by one, and a queued event tells it so.
    await until(lambda: [g.positions()[-1:] for g in guests] == [[2], [3], [4]])
    assert guests[0].positions() == [1, 2]
    order = await started_in_order(gate, [first, *guests, member], 4)
    assert order == ["first", "member", "guest0", "guest1", "guest2"][: len(order)]
    gate.open(guests[2].ticket.request_id)
    for stream in (first, *guests, member):
        assert (await stream.done())[-1] == "workflow_complete"


async def test_guests_keep_their_share_under_sustained_member_load(
    build: Build, gate: GateWorkflow
) -> None:
    manager = build(gate, max_concurrent=1, max_queue_size=100, tiers={"member": 3, "guest": 1})
    first = await occupied(manager, gate)
    streams = [first]
    streams += [await ask(manager, f"g{i}") for i in range(8)]
    streams += [await ask(manager, f"m{i}", tier="member") for i in range(24)]
    order = await started_in_order(gate, streams, 16)
    admitted = order[1:17]
    guests = sum(1 for q in admitted if q.startswith("g"))
    # Weights 3 : 1 give the guests one admission in four while both tiers wait.
    assert 3 <= guests <= 5, admitted
    # Within a tier, first come first served.
    assert [q for q in admitted if q.startswith("g")] == [f"g{i}" for i in range(guests)]
    for stream in streams:
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in streams))


async def test_a_tier_of_weight_zero_waits_until_no_other_tier_does(
    build: Build, gate: GateWorkflow
) -> None:
    manager = build(gate, max_concurrent=1, tiers={"guest": 1, "bulk": 0})
    first = await occupied(manager, gate)
    bulk = [await ask(manager, f"bulk{i}", tier="bulk") for i in range(2)]
    guests = [await ask(manager, f"guest{i}") for i in range(3)]
    assert [g.ticket.position for g in guests] == [1, 2, 3]
    await until(lambda: [b.ticket.position for b in bulk] == [4, 5])
    order = await started_in_order(gate, [first, *bulk, *guests], 5)
    assert order == ["first", "guest0", "guest1", "guest2", "bulk0", "bulk1"]
    gate.open(bulk[1].ticket.request_id)
    await asyncio.gather(*(s.done() for s in (first, *bulk, *guests)))


async def test_an_unknown_tier_is_ordered_as_a_guest(build: Build, gate: GateWorkflow) -> None:
    manager = build(gate, max_concurrent=1, tiers=MEMBERS)
    first = await occupied(manager, gate)
    guest = await ask(manager, "guest")
    stranger = await ask(manager, "stranger", tier="no-such-tier")
    assert (guest.ticket.position, stranger.ticket.position) == (1, 2)
    for stream in (first, guest, stranger):
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in (first, guest, stranger)))


async def used(manager: QueueManager, gate: GateWorkflow, client: str, seconds: float) -> None:
    """The client asks once, alone (no contention: admitted at once), holding a slot ``seconds``."""
    await idle(manager)
    stream = await ask(manager, f"{client}-warm", client=client)
    assert stream.ticket.place.admitted  # Nobody waits: admitted at once, as in FIFO.
    await asyncio.sleep(seconds)  # The workload: an answer that takes this long.
    gate.open(stream.ticket.request_id)
    await stream.done()
    await charged(manager, client)


@pytest.mark.parametrize("fairness", ["fair", "fifo"])
async def test_a_heavy_clients_new_request_goes_behind_light_clients_only_when_fair(
    build: Build, gate: GateWorkflow, fairness: str
) -> None:
    manager = build(gate, max_concurrent=1, fairness=fairness)
    await used(manager, gate, "heavy", 0.5)
    for i in range(3):
        await used(manager, gate, f"light{i}", 0.0)
    holder = await ask(manager, "holder", client="holder")
    heavy = await ask(manager, "heavy", client="heavy")
    light = await ask(manager, "light", client="light0")
    expected = (2, 1) if fairness == "fair" else (1, 2)
    await until(lambda: (heavy.ticket.position, light.ticket.position) == expected)
    for stream in (holder, heavy, light):
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in (holder, heavy, light)))


async def test_a_heavy_clients_use_stops_counting_as_it_decays(
    build: Build, gate: GateWorkflow
) -> None:
    manager = build(gate, max_concurrent=1, fairness="fair", fair_half_life_sec=0.05)
    await used(manager, gate, "heavy", 0.5)
    for i in range(3):
        await used(manager, gate, f"light{i}", 0.0)
    await asyncio.sleep(0.6)  # Twelve half-lives: what it used no longer counts.
    holder = await ask(manager, "holder", client="holder")
    heavy = await ask(manager, "heavy", client="heavy")
    light = await ask(manager, "light", client="light0")
    await until(lambda: (heavy.ticket.position, light.ticket.position) == (1, 2))
    for stream in (holder, heavy, light):
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in (holder, heavy, light)))


def positions(tickets: list[Ticket]) -> list[int]:
    return [t.position for t in tickets]


async def test_two_processes_keep_one_order_across_tiers(
    shared: Factory, gate: GateWorkflow
) -> None:
    one = shared(gate, max_concurrent=1, tiers=MEMBERS)
    two = shared(gate, max_concurrent=1, tiers=MEMBERS)
    first = await occupied(one, gate)
    guests = [await ask(one, "g0"), await ask(two, "g1"), await ask(one, "g2")]
    member = await ask(two, "member", tier="member")
    assert member.ticket.position == 1
    tickets = [g.ticket for g in guests]
    # Every process learns that its guests moved back (one in this process, two in the other).
    await until(lambda: positions(tickets) == [2, 3, 4])
    await until(lambda: [g.positions()[-1] for g in guests] == [2, 3, 4])
    order = await started_in_order(gate, [first, *guests, member], 4)
    assert order == ["first", "member", "g0", "g1", "g2"]
    gate.open(guests[2].ticket.request_id)
    await asyncio.gather(*(s.done() for s in (first, *guests, member)))


async def test_where_a_waiting_request_stands_keeps_its_arrival_time(
    shared: Factory, gate: GateWorkflow
) -> None:
    one = shared(gate, max_concurrent=1, tiers=MEMBERS)
    two = shared(gate, max_concurrent=1, tiers=MEMBERS)
    first = await occupied(one, gate)
    guest = await ask(one, "guest")
    found = await two.admission.locate(guest.ticket.request_id)
    assert found is not None and found["queue_position"] == 1
    # The arrival, not the sort key (which lies ahead of it by a spacing).
    created = datetime.fromisoformat(found["created_at"]).timestamp()
    assert abs(created - guest.ticket.record.created_at) < 0.5
    for stream in (first, guest):
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in (first, guest)))


async def join_front(manager: QueueManager, query: str) -> Stream:
    """Line a request up ahead of everyone waiting, as a request sent back to the line is."""
    ticket = Ticket(RequestRecord(request_id=f"front-{query}", query=query))
    backend = manager.admission
    if isinstance(backend, LocalAdmission):
        backend.join(ticket, front=True)
    else:
        await admission(manager)._join(ticket, force=True, front=True)
    return Stream(manager, ticket)


@pytest.mark.parametrize("tiers", [None, MEMBERS], ids=["one tier", "tiers"])
async def test_a_request_sent_to_the_front_goes_ahead_of_everyone_waiting(
    build: Build, gate: GateWorkflow, tiers: dict[str, float] | None
) -> None:
    manager = build(gate, max_concurrent=1, **({"tiers": tiers} if tiers else {}))
    first = await occupied(manager, gate)
    waiting = [await ask(manager, "guest"), await ask(manager, "member", tier="member")]
    front = await join_front(manager, "again")
    assert front.ticket.position == 1
    await until(lambda: sorted(positions([w.ticket for w in waiting])) == [2, 3])
    order = await started_in_order(gate, [first, *waiting, front], 1)
    assert order == ["first", "again"]
    for stream in (first, *waiting, front):
        gate.open(stream.ticket.request_id)
    await asyncio.gather(*(s.done() for s in (first, *waiting, front)))


async def test_guests_who_leave_before_their_turn_do_not_push_later_guests_back(
    gate: GateWorkflow,
) -> None:
    # Refused at the door (wait_too_long) or cancelled at once, a guest leaves the line
    # as the latest of its tier: its tier's tag goes back, so the next guest keeps its
    # arrival order against a member of equal weight. (The local line; see docs.)
    manager = make_manager(gate, max_concurrent=1, tiers={"member": 1, "guest": 1})
    first = await occupied(manager, gate)
    for i in range(20):
        gone = await ask(manager, f"gone{i}")
        assert manager.cancel(gone.ticket.request_id) is not None
        await gone.done()
    guest = await ask(manager, "guest")
    member = await ask(manager, "member", tier="member")
    assert (guest.ticket.position, member.ticket.position) == (1, 2)
    for stream in (first, guest, member):
        gate.open(stream.ticket.request_id)
    for stream in (first, guest, member):
        assert (await stream.done())[-1] == "workflow_complete"
