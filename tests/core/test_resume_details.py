"""Resumable requests on a shared queue, in detail: a remote reader leaving lets go of its
claim at once, so the driving process need not wait for the claim to lapse."""

from __future__ import annotations

import asyncio

from .conftest import Factory, until
from .test_redis_resume import Held, SharedReader
from .test_resume import Reader, chunks


async def test_a_remote_reader_leaving_gives_up_its_claim_at_once(
    shared: Factory,
) -> None:
    flow = Held()
    a = shared(flow, resume_grace_sec=5)
    b = shared(flow, resume_grace_sec=5)
    ticket = await a.submit("q")
    reader = Reader(a, a.resumable(ticket))
    await until(lambda: chunks(reader) == "a0 a1 a2 ")
    await reader.disconnect()
    logs = b.resumes.shared
    assert logs is not None
    remote = SharedReader(b, ticket.request_id, reader.seqs[-1], claims=True)
    await until(lambda: b.resumes.remote.get(ticket.request_id, [None])[0] is not None)
    async with asyncio.timeout(3):
        while not await logs.attached(ticket.request_id):
            await asyncio.sleep(0.02)
    remote.task.cancel()
    await asyncio.gather(remote.task, return_exceptions=True)
    assert ticket.request_id not in b.resumes.remote
    async with asyncio.timeout(1.5):  # a claim left to lapse would hold 4 s
        while await logs.attached(ticket.request_id):
            await asyncio.sleep(0.02)
    flow.release.set()
