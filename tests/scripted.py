"""Workflows for tests, end-to-end checks and benchmarks; never for production.

``ScriptedWorkflow`` does what the question tells it, so a test client can
drive a real server: ``"chunks=10 delay=0.01 suggest=2"``, ``"sleep=5"``,
``"fail=workflow_error"``, ``"fail=unavailable"``, ``"fail=crash"``,
``"fail=workflow_error after=3"``, ``"echo: any text"`` (streams the text after
``echo:`` word by word). Words that are not directives are ignored.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator

from guest_queue.workflows.base import (
    WorkflowError,
    WorkflowItem,
    WorkflowRequest,
    WorkflowUnavailable,
)

DIRECTIVE = re.compile(r"(\w+)=([\w.]+)")


class ScriptedWorkflow:
    """Streams ``chunks`` chunks ``delay`` seconds apart after sleeping ``sleep`` seconds."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        """Follow the directives in the query."""
        head, echo, text = request.query.partition("echo:")
        script = dict(DIRECTIVE.findall(head))
        await asyncio.sleep(float(script.get("sleep", 0)))
        if echo:
            for word in re.findall(r"\S+\s*", text.strip()):
                yield word
            yield {"event": "workflow_complete", "data": {"suggested_questions": []}}
            return
        chunks = int(script.get("chunks", 3))
        delay = float(script.get("delay", 0))
        fail_after = int(script.get("after", 0))
        for i in range(chunks):
            if "fail" in script and i == fail_after:
                break
            if delay:
                await asyncio.sleep(delay)
            yield f"chunk{i} "
        failure = script.get("fail")
        if failure == "workflow_error":
            raise WorkflowError("The scripted workflow failed.")
        if failure == "unavailable":
            raise WorkflowUnavailable("The scripted service is down.")
        if failure == "crash":
            raise RuntimeError("secret internal detail")
        suggested = [f"Follow-up {i}?" for i in range(int(script.get("suggest", 3)))]
        yield {"event": "workflow_complete", "data": {"suggested_questions": suggested}}


class TenChunksWorkflow:
    """Ten chunks without delay: the benchmark's cheapest possible workflow."""

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        """Yield ten chunks and finish."""
        for i in range(10):
            yield f"chunk {i} "
        yield {"event": "workflow_complete", "data": {"suggested_questions": []}}


class RedisProbeWorkflow(ScriptedWorkflow):
    """``ScriptedWorkflow`` that records, in Redis, the order requests start and how many run.

    For tests of a queue shared by several processes: every process's workflow
    writes to ``GUEST_TEST_PROBE_REDIS_URL`` under ``GUEST_TEST_PROBE_KEY``:
    ``<key>:started`` (queries in start order), ``<key>:running`` (the set of
    request ids running now) and ``<key>:max_running``. Running requests are a
    set, not a counter, so a request cancelled at any moment is counted right.
    """

    START = """
    redis.call('SADD', KEYS[2], ARGV[1])
    local running = redis.call('SCARD', KEYS[2])
    if running > tonumber(redis.call('GET', KEYS[3]) or '0') then
      redis.call('SET', KEYS[3], running)
    end
    redis.call('RPUSH', KEYS[1], ARGV[2])
    """

    def __init__(self) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(os.environ["GUEST_TEST_PROBE_REDIS_URL"])
        key = os.environ["GUEST_TEST_PROBE_KEY"]
        self.keys = [f"{key}:started", f"{key}:running", f"{key}:max_running"]
        self.start = self.client.register_script(self.START)

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        """Count this request as running for as long as the scripted answer takes."""
        try:
            await self.start(keys=self.keys, args=[request.request_id, request.query])
            async for item in super().stream(request):
                yield item
        finally:
            await self.client.srem(self.keys[1], request.request_id)  # type: ignore[misc]


def tier_from_header(request: object) -> str | None:
    """A ``GUEST_PRIORITY`` for end-to-end tests: the request names its tier (``X-Test-Tier``)."""
    headers = getattr(request, "headers", {})
    tier = headers.get("X-Test-Tier")
    return str(tier) if tier else None
