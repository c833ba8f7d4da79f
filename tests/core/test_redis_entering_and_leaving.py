"""Entering and leaving the shared line: a guest let in at once, an admission heard before
the entry's reply, and a follower's hold on its client's cap given back when it ends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from guest_queue.core.errors import ClientLimited
from guest_queue.core.manager import QueueManager

from .conftest import Factory, GateWorkflow, Stream, admission, until
from .test_answer_cache import MemoryCache


async def renewed(manager: QueueManager) -> None:
    """Wait until the process has renewed its leases in Redis at least once."""
    adm = admission(manager)
    # Private: the first renewal sets the epoch; nothing public says it happened.
    await until(lambda: adm._epoch != "")
    async with asyncio.timeout(5):
        while not await adm.client.exists(adm.process_key):
            await asyncio.sleep(0.01)


async def asks_again(manager: QueueManager, client: str, within: float = 2.0) -> Stream:
    """The client's next question, accepted within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return Stream(manager, await manager.submit("And now?", client_hint=client))
        except ClientLimited:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def test_a_guest_arriving_at_an_empty_queue_starts_at_once_first_in_line(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    # Renewals 10 s apart: nothing but the entry itself can start the request.
    manager = shared(gate, max_concurrent=1, lease_sec=30)
    await renewed(manager)
    stream = Stream(manager, await manager.submit("r0"))
    assert stream.ticket.record.arrival_position == 1
    await until(lambda: gate.started == ["r0"], timeout=1)
    assert admission(manager).active == {stream.ticket.request_id: stream.ticket}
    gate.open(stream.ticket.request_id)
    assert (await stream.done())[-1] == "workflow_complete"


async def test_an_admission_heard_before_the_entrys_reply_starts_the_request_at_once(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    a = shared(gate, max_concurrent=1, lease_sec=30)
    b = shared(gate, max_concurrent=1, lease_sec=30)
    running = Stream(b, await b.submit("r0"))
    await until(lambda: gate.started == ["r0"])
    await renewed(a)
    adm = admission(a)
    real_run = adm.link.run

    async def slow_reply(script: Any, keys: list[str], args: list[Any]) -> Any:
        reply = await real_run(script, keys, args)
        # Private: the backend's Lua scripts; delaying only the entry needs its identity.
        if script is adm._enter and reply[0] == 0:
            # While the reply is on its way, the slot frees up and Redis admits it: this
            # process hears of the admission first.
            gate.open(running.ticket.request_id)
            await until(lambda: args[0] in adm._early)
            await asyncio.sleep(0.1)  # and the renewal that the message woke has run
        return reply

    adm.link.run = slow_reply  # type: ignore[method-assign]
    waiting = Stream(a, await a.submit("r1"))
    await until(lambda: gate.started == ["r0", "r1"], timeout=1)
    assert adm._early == {}
    gate.open(waiting.ticket.request_id)
    assert (await waiting.done())[-1] == "workflow_complete"
    await running.done()


async def test_a_followers_client_may_ask_again_as_soon_as_it_is_answered(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    # Long leases: only the follower's leave can give its client's count back.
    a = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=1, lease_sec=30)
    leader = Stream(a, await a.submit("Same?", client_hint="other"))
    follower = Stream(a, await a.submit("Same?", client_hint="c"))  # held in Redis for c
    await until(lambda: gate.started == ["Same?"])
    assert follower.ticket.request_id in admission(a).held
    gate.open(leader.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    await leader.done()
    again = await asks_again(a, "c")
    gate.open(again.ticket.request_id)
    assert (await again.done())[-1] == "workflow_complete"


async def test_a_follower_that_lined_up_again_gives_its_clients_count_back_when_answered(
    shared: Factory,
) -> None:
    gate = GateWorkflow(chunks=0)
    a = shared(gate, MemoryCache(), max_concurrent=1, max_per_client=1)
    adm = admission(a)
    leader = Stream(a, await a.submit("Q", client_hint="other"))
    follower = Stream(a, await a.submit("Q", client_hint="c"))  # held in Redis for c
    await until(lambda: gate.started == ["Q"])
    gate.fail(leader.ticket.request_id)  # the follower lines up again, with its own place
    await until(lambda: gate.started == ["Q", "Q"])
    gate.open(follower.ticket.request_id)
    assert (await follower.done())[-1] == "workflow_complete"
    # Private: the leaves to retry show nowhere public until they succeed.
    await until(lambda: not adm._leaving)
    # Renewals after its leave must not count it against its client again.
    passes = 0
    # Private: the renewal pass is counted; no public seam.
    renew = adm._renew_in_order

    async def counted() -> None:
        nonlocal passes
        await renew()
        passes += 1

    adm._renew_in_order = counted  # type: ignore[method-assign]
    await until(lambda: passes >= 2)
    again = await asks_again(a, "c", within=0)
    gate.open(again.ticket.request_id)
    assert (await again.done())[-1] == "workflow_complete"
