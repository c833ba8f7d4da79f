"""Helpers for driving a QueueManager directly, without Django."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from guest_queue.core.answers.cache import AnswerCache
from guest_queue.core.backends.base import Ticket
from guest_queue.core.backends.redis import RedisAdmission
from guest_queue.core.backends.redis.logs import RedisLogs
from guest_queue.core.config import QueueConfig
from guest_queue.core.events import Event
from guest_queue.core.manager import QueueManager
from guest_queue.workflows.base import WorkflowError, WorkflowItem, WorkflowRequest


class GateWorkflow:
    """Each request streams ``chunks`` chunks, then waits until the test opens its gate."""

    def __init__(self, chunks: int = 2) -> None:
        self.chunks = chunks
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.running = 0
        self.max_running = 0
        self.closed: list[str] = []
        self.failing: set[str] = set()

    def open(self, request_id: str) -> None:
        self.gates.setdefault(request_id, asyncio.Event()).set()

    def fail(self, request_id: str) -> None:
        """Open the request's gate onto a ``WorkflowError`` instead of its completion."""
        self.failing.add(request_id)
        self.open(request_id)

    async def stream(self, request: WorkflowRequest) -> AsyncIterator[WorkflowItem]:
        self.started.append(request.query)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            for i in range(self.chunks):
                yield f"{request.query}-{i} "
            await self.gates.setdefault(request.request_id, asyncio.Event()).wait()
            if request.request_id in self.failing:
                raise WorkflowError("The upstream failed.")
            yield {"event": "workflow_complete", "data": {"suggested_questions": ["more?"]}}
        finally:
            self.running -= 1
            self.closed.append(request.query)


def make_manager(workflow: Any, cache: AnswerCache | None = None, **config: Any) -> QueueManager:
    config.setdefault("position_update_interval_sec", 0.01)
    return QueueManager(QueueConfig(**config), workflow, cache=cache)


class Stream:
    """A request's event stream consumed in a background task, for assertions."""

    def __init__(self, manager: QueueManager, ticket: Ticket) -> None:
        self.ticket = ticket
        self.events: list[Event] = []
        self.heartbeats = 0
        self._gen = manager.events(ticket)
        self.task = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        async for event in self._gen:
            if event is None:
                self.heartbeats += 1
            else:
                self.events.append(event)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def positions(self) -> list[int]:
        return [e.data["queue_position"] for e in self.events if e.name == "queued"]

    async def disconnect(self) -> None:
        """What a server does when the client goes: cancel the task driving the stream."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def done(self, timeout: float = 5) -> list[str]:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.names


async def until(predicate: Any, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, polling the loop."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
def gate() -> GateWorkflow:
    return GateWorkflow()


Factory = Callable[..., QueueManager]


@pytest.fixture
async def shared(redis_test_url: str, redis_test_prefix: str) -> AsyncIterator[Factory]:
    """Managers sharing one queue (one Redis, one key prefix)."""
    managers: list[QueueManager] = []

    def build(workflow: Any, cache: AnswerCache | None = None, **config: Any) -> QueueManager:
        options = {
            "lease_sec": config.pop("lease_sec", 1.5),
            "timeout_sec": config.pop("redis_timeout_sec", 0.25),
            "url": config.pop("redis_url", redis_test_url),
            "prefix": redis_test_prefix,
        }
        config.setdefault("shutdown_grace_sec", 0)
        manager = make_manager(workflow, backend="redis", backend_options=options, **config)
        if cache is not None:
            manager = QueueManager(manager.config, workflow, cache=cache)
        managers.append(manager)
        manager.start()
        return manager

    yield build
    for manager in managers:
        await asyncio.wait_for(manager.close(), 10)


def admission(manager: QueueManager) -> RedisAdmission:
    assert isinstance(manager.admission, RedisAdmission)
    return manager.admission


@pytest.fixture(params=["local", "redis"])
def build(request: pytest.FixtureRequest) -> Factory:
    """Managers on the local queue, then (a second run of the test) on the shared one."""
    if request.param == "local":
        return make_manager
    shared: Factory = request.getfixturevalue("shared")
    return shared


async def listening(*managers: QueueManager) -> None:
    """Wait until each of ``managers`` (sharing one queue) listens for cancels and readers:
    Redis counts the subscribers of their channels (``PUBSUB NUMSUB``)."""
    logs = managers[0].resumes.shared
    assert isinstance(logs, RedisLogs)
    channels = (logs.cancels, logs.readers)
    async with asyncio.timeout(5):
        while True:
            counts = await logs.client.pubsub_numsub(*channels)
            if all(count >= len(managers) for _, count in counts):
                return
            await asyncio.sleep(0.01)
