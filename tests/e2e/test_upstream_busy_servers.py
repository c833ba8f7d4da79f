"""Two real uvicorn processes sharing a Redis queue in front of an upstream that answers
``429`` above one request at once: the guest it refuses waits in line again, on the
shared line, and gets its answer; nobody gets an error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from bench.upstreams import RunningUpstream, start_upstream

from .conftest import ServerFactory
from .test_servers import names, stream_events
from .test_shared_queue import shared_env

OPENAI = "guest_queue.workflows.openai.OpenAIChatWorkflow"


@pytest.fixture
def one_at_a_time() -> Iterator[RunningUpstream]:
    # An answer takes 2 s; a refusal asks for 2.5 s: the second guest is refused once.
    upstream = start_upstream(
        "quota", quota=1, concurrent=True, retry_after=2.5, ttfc=2.0, chunks=3
    )
    yield upstream
    upstream.stop()


async def test_a_guest_refused_by_the_upstream_waits_again_on_the_shared_line(
    start_server: ServerFactory,
    redis_test_url: str,
    redis_test_prefix: str,
    one_at_a_time: RunningUpstream,
) -> None:
    env = shared_env(
        redis_test_url,
        redis_test_prefix,
        GUEST_WORKFLOW=OPENAI,
        GUEST_WORKFLOW_OPTIONS=json.dumps({"base_url": one_at_a_time.url, "model": "m"}),
        GUEST_MAX_CONCURRENT_REQUESTS="2",
    )
    servers = [start_server(**env) for _ in range(2)]
    async with httpx.AsyncClient(timeout=30) as client:
        first = asyncio.ensure_future(stream_events(client, servers[0].url, "Hello?"))
        async with asyncio.timeout(10):
            while one_at_a_time.stats()["active"] == 0:
                await asyncio.sleep(0.01)
        # The upstream is answering the first guest: the second is refused, then waits.
        second = await stream_events(client, servers[1].url, "Hello?")
        streams = [await first, second]
        # Each process publishes its figures at its next renewal pass.
        async with asyncio.timeout(10):
            while True:
                status = (await client.get(f"{servers[0].url}/api/v1/guest/queue/status")).json()
                if status["completed_requests"] == 2:
                    break
                await asyncio.sleep(0.1)
    for events in streams:
        assert names(events)[-1] == "workflow_complete", names(events)
        assert "".join(e["data"] for e in events if e["event"] == "answer_chunk") == "w0 w1 w2 "
    assert names(streams[0]).count("processing") == 1
    seen = names(streams[1])
    back = seen.index("queued", seen.index("processing"))
    assert seen[back + 1] == "processing"
    assert one_at_a_time.stats()["refused"] >= 1
    assert one_at_a_time.stats()["max_active"] == 1
    assert (status["total_requests"], status["failed_requests"]) == (2, 0)
