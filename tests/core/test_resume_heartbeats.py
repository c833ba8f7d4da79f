"""A resumable guest waiting a long while: keep-alives do not end or break the request."""

from __future__ import annotations

import asyncio

from .conftest import GateWorkflow, make_manager, until
from .test_resume import Reader, chunks, resumable


async def test_a_resumable_guest_waits_through_keep_alives_then_gets_the_answer(
    gate: GateWorkflow,
) -> None:
    manager = make_manager(gate, max_concurrent=1, heartbeat_sec=0.05, resume_grace_sec=5)
    first, res_first = await resumable(manager, "first")
    second, res_second = await resumable(manager, "second")
    readers = [Reader(manager, res_first), Reader(manager, res_second)]
    await until(lambda: gate.started == ["first"])
    await asyncio.sleep(0.4)  # several keep-alive intervals with nothing new to say
    assert readers[1].heartbeats >= 3
    assert second.record.status.value == "queued"
    for ticket, reader in zip((first, second), readers, strict=True):
        await until(
            lambda t=ticket: t.request_id in gate.gates or gate.started[-1] == t.record.query
        )
        gate.open(ticket.request_id)
        await reader.done()
        assert reader.names[-1] == "workflow_complete"
    assert chunks(readers[1]) == "second-0 second-1 "
    await manager.close()
