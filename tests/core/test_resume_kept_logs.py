"""Finished resumable logs kept for late resumes are bounded per client and in total.

A guest asking a cached question with ``"resumable": true`` in a loop gets its answer
at once and takes no slot: without a bound, every answer's log would stay in memory
for the grace period, as many as the guest can ask.
"""

from __future__ import annotations

import asyncio

import pytest

from guest_queue.core.errors import ClientLimited
from guest_queue.core.manager import QueueManager
from guest_queue.core.resume import LogExpired

from .conftest import Factory, until
from .test_answer_cache import Echo, MemoryCache, make
from .test_resume import Reader


async def ask_cached(manager: QueueManager, client: str, times: int) -> list[str]:
    """Ask a cached question resumably ``times`` times, reading each answer to its end."""
    ids = []
    for _ in range(times):
        while True:
            try:
                ticket = await manager.submit("What is DNA?", client_hint=client)
                break
            except ClientLimited:
                # A shared queue gives the last answer's hold back a moment after it ends.
                await asyncio.sleep(0.01)
        reader = Reader(manager, manager.resumable(ticket))
        assert (await reader.done())[-1] == "workflow_complete"
        ids.append(ticket.request_id)
    return ids


def kept(manager: QueueManager, ids: list[str]) -> list[str]:
    """Which of ``ids`` can still be resumed here."""
    alive = []
    for request_id in ids:
        try:
            manager.resumes.get(request_id)
        except (LogExpired, KeyError):
            continue
        alive.append(request_id)
    return alive


async def warm(manager: QueueManager) -> None:
    ticket = await manager.submit("What is DNA?")
    reader = Reader(manager, manager.resumable(ticket))
    await reader.done()
    await until(lambda: len(manager.resumes.by_id) == 1)


async def test_a_client_keeps_no_more_finished_logs_than_its_cap() -> None:
    manager = make(Echo(), MemoryCache(), max_per_client=3, resume_grace_sec=60)
    await warm(manager)
    ids = await ask_cached(manager, "flooder", 20)
    # The newest three can be resumed; the older ones were dropped early, and say so.
    assert kept(manager, ids) == ids[-3:]
    with pytest.raises(LogExpired):
        manager.resumes.get(ids[0])
    # Another guest's answers are not dropped for the flooder's.
    other = await ask_cached(manager, "guest", 2)
    await ask_cached(manager, "flooder", 5)
    assert kept(manager, other) == other


async def test_finished_logs_are_bounded_in_total_oldest_first() -> None:
    manager = make(
        Echo(),
        MemoryCache(),
        max_per_client=0,
        history_limit=10,
        max_queue_size=5,
        resume_grace_sec=60,
    )
    assert manager.resumes.kept_limit == 10
    await warm(manager)
    ids = []
    for client in range(30):
        ids += await ask_cached(manager, f"client-{client}", 1)
    assert kept(manager, ids) == ids[-10:]
    assert len(manager.resumes.by_id) == 10


async def test_a_dropped_log_reads_as_expired_on_every_process(
    shared: Factory,
) -> None:
    a = shared(Echo(), MemoryCache(), max_per_client=1, resume_grace_sec=60)
    b = shared(Echo(), MemoryCache(), max_per_client=1, resume_grace_sec=60)
    await warm(a)
    first, second = await ask_cached(a, "flooder", 2)

    async def state(request_id: str) -> str | None:
        assert b.resumes.shared is not None
        return await b.resumes.shared.state(request_id)

    async def settled() -> None:
        while await state(first) != "expired":
            await asyncio.sleep(0.01)

    await asyncio.wait_for(settled(), 3)
    assert await state(second) == "live"
