"""The Redis log writer: a failed batch is sent once more, in order; then it gives up clearly.

Failures are simulated on the real Redis by wrapping the client's pipelines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from guest_queue.core.backends.redis.logs import _raise_unless_written
from guest_queue.core.events import Event

from .conftest import Factory, admission
from .test_redis_resume import Held

RID = "00000000-0000-4000-8000-0000000000f1"
FAILED = "resumable event(s) to Redis failed"


def failing_pipelines(logs: Any, fail: Callable[[int], str | None]) -> list[int]:
    """Make the writer's pipelines fail as ``fail(call number)`` says: ``"before"`` (nothing
    sent), ``"after"`` (sent, the reply lost) or None (works). Returns the batch sizes."""
    real = logs.client.pipeline
    sizes: list[int] = []

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        async def flaky(*a: Any, **kw: Any) -> Any:
            sizes.append(len(pipe.command_stack))
            how = fail(len(sizes))
            if how == "before":
                await pipe.reset()
                raise RedisConnectionError("Connection reset by peer.")
            result = await execute(*a, **kw)
            if how == "after":
                raise RedisConnectionError("Connection reset by peer.")
            return result

        pipe.execute = flaky
        return pipe

    logs.client.pipeline = pipeline
    return sizes


async def written(logs: Any, request_id: str = RID) -> list[int]:
    """The seqs in the request's stream, each as often as it is there."""
    found = await logs.client.xrange(f"{logs.tag}:log:{request_id}")
    return [int(entry_id.split("-")[0]) for entry_id, _ in found]


def chunk(i: int) -> Event:
    return Event("answer_chunk", f"c{i} ")


@pytest.mark.parametrize("how", ["before", "after"])
async def test_a_batch_that_fails_once_is_sent_again_nothing_lost_nor_twice(
    shared: Factory,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs = admission(shared(Held())).logs
    sizes = failing_pipelines(logs, lambda n: how if n == 1 else None)
    for seq in range(1, 6):
        logs.append(RID, seq, chunk(seq))
    await asyncio.sleep(0)
    for seq in range(6, 11):  # more arrive while the failed batch waits to be sent again
        logs.append(RID, seq, chunk(seq))
    async with asyncio.timeout(3):
        while await written(logs) != list(range(1, 11)):
            await asyncio.sleep(0.02)
    assert len(sizes) >= 2  # it was sent again
    entries = await logs.read(RID, 0, 0.001)
    assert [e.data for _, e in entries] == [f"c{i} " for i in range(1, 11)]
    # A retry that finds part of its batch already written is no failure.
    assert FAILED not in caplog.text


async def test_a_batch_that_keeps_failing_is_given_up_with_a_warning(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs = admission(shared(Held())).logs
    broken = True
    sizes = failing_pipelines(logs, lambda n: "before" if broken else None)
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        for seq in range(1, 4):
            logs.append(RID, seq, chunk(seq))
        async with asyncio.timeout(3):
            while FAILED not in caplog.text:
                await asyncio.sleep(0.01)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["Writing 3 resumable event(s) to Redis failed"]
    await asyncio.sleep(0.2)
    assert len(sizes) == 2  # tried twice, then given up: no busy loop
    assert await written(logs) == []
    broken = False
    logs.append(RID, 4, chunk(4))  # the writer still works for what comes next
    async with asyncio.timeout(3):
        while await written(logs) != [4]:
            await asyncio.sleep(0.02)
    await asyncio.wait_for(logs.close(), 3)


async def test_every_failed_batch_gets_its_own_second_try(
    shared: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry that worked, or one given up, does not use up the next batch's retry."""
    logs = admission(shared(Held())).logs
    # Calls 1, 3 and 4 fail: batch 1 is sent again (2) and written; batch 2 fails twice
    # (3, 4) and is given up; batch 3 fails once (5) and is sent again (6).
    failing = {1, 3, 4, 5}
    failing_pipelines(logs, lambda n: "before" if n in failing else None)
    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        logs.append(RID, 1, chunk(1))
        async with asyncio.timeout(3):
            while await written(logs) != [1]:
                await asyncio.sleep(0.01)
        logs.append(RID, 2, chunk(2))
        async with asyncio.timeout(3):
            while FAILED not in caplog.text:
                await asyncio.sleep(0.01)
        logs.append(RID, 3, chunk(3))
        async with asyncio.timeout(3):
            while await written(logs) != [1, 3]:
                await asyncio.sleep(0.01)
    assert caplog.text.count(FAILED) == 1  # batch 2 only
    await asyncio.wait_for(logs.close(), 3)


def test_only_an_entry_already_written_counts_as_written() -> None:
    again = ResponseError(
        "The ID specified in XADD is equal or smaller than the target stream top item"
    )
    _raise_unless_written([1, again, True])  # a batch sent again: nothing written twice
    full = ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    for replies in ([full], [again, full], [True, again, full]):
        with pytest.raises(ResponseError) as raised:
            _raise_unless_written(replies)
        assert raised.value is full
