"""Through the real ASGI app: disconnects free their place, lifespan runs the queue."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import override_settings

from genestory.asgi import application
from guest_queue.runtime import get_manager

from .conftest import asgi_get, http_scope


def chat_scope(body: bytes) -> dict[str, Any]:
    content = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return http_scope("POST", "/api/v1/guest/chat", content)


class Client:
    """One HTTP client of the ASGI app, reading SSE events as they come."""

    def __init__(self, query: str) -> None:
        body = json.dumps({"query": query}).encode()
        self.app = ApplicationCommunicator(application, chat_scope(body))
        self.body = body
        self.buffer = b""

    async def start(self) -> int:
        await self.app.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.app.receive_output(5)
        assert start["type"] == "http.response.start"
        return int(start["status"])

    async def event(self, timeout: float = 5) -> dict[str, Any]:
        while b"\n\n" not in self.buffer:
            message = await self.app.receive_output(timeout)
            self.buffer += message.get("body", b"")
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        if raw.startswith(b":"):
            return await self.event(timeout)
        return json.loads(raw[6:])  # type: ignore[no-any-return]

    async def until(self, name: str) -> dict[str, Any]:
        while True:
            event = await self.event()
            if event["event"] == name:
                return event

    async def disconnect(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(2)

    async def finish(self) -> dict[str, Any]:
        """Read to the terminal event and let the application return."""
        event = await self.until("workflow_complete")
        await self.app.wait(2)
        return event


async def settle(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_disconnect_while_processing_frees_the_slot_for_the_next() -> None:
    first, second = Client("sleep=30"), Client("chunks=2")
    assert await first.start() == 200
    await first.until("processing")
    assert await second.start() == 200
    assert (await second.event())["data"]["queue_position"] == 1
    await first.disconnect()
    await second.until("processing")
    assert (await second.finish())["data"]["cached"] is False
    manager = get_manager()
    await settle(lambda: manager.status()["active_requests"] == 0)
    status = manager.status()
    assert status["cancelled_requests"] == 1 and status["completed_requests"] == 1
    assert not manager.stopper.workflow_tasks


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_disconnect_while_waiting_leaves_the_queue() -> None:
    head, leaver, last = Client("sleep=0.5"), Client("chunks=1"), Client("chunks=1")
    await head.start()
    await head.until("processing")
    await leaver.start()
    await last.start()
    assert (await leaver.event())["data"]["queue_position"] == 1
    assert (await last.event())["data"]["queue_position"] == 2
    await leaver.disconnect()
    manager = get_manager()
    await settle(lambda: manager.status()["queue_size"] == 1)
    assert (await last.event())["data"]["queue_position"] == 1
    await last.finish()
    await head.finish()
    status = manager.status()
    assert status["cancelled_requests"] == 1 and status["completed_requests"] == 2


async def test_lifespan_starts_and_drains_the_queue() -> None:
    lifespan = ApplicationCommunicator(
        application, {"type": "lifespan", "asgi": {"version": "3.0"}}
    )
    await lifespan.send_input({"type": "lifespan.startup"})
    assert (await lifespan.receive_output(5))["type"] == "lifespan.startup.complete"
    manager = get_manager()
    assert manager.loop is asyncio.get_running_loop() and manager.stopper.background
    await lifespan.send_input({"type": "lifespan.shutdown"})
    assert (await lifespan.receive_output(5))["type"] == "lifespan.shutdown.complete"
    assert manager.accepting is False and not manager.stopper.background


@override_settings(GUEST_WORKFLOW="no.such.Workflow")
async def test_lifespan_reports_a_failed_startup() -> None:
    lifespan = ApplicationCommunicator(
        application, {"type": "lifespan", "asgi": {"version": "3.0"}}
    )
    await lifespan.send_input({"type": "lifespan.startup"})
    message = await lifespan.receive_output(5)
    assert message["type"] == "lifespan.startup.failed"
    # The system check's message, not a traceback.
    assert "guest_queue.E014: GUEST_WORKFLOW 'no.such.Workflow' cannot be" in message["message"]
    assert "Traceback" not in message["message"]


@override_settings(GUEST_WORKFLOW="no.such.Workflow")
async def test_without_lifespan_a_bad_setting_is_a_json_503_and_a_clear_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    status, body = await asgi_get("/api/v1/guest/queue/status")
    assert status == 503
    assert body["code"] == "misconfigured" and "no.such" not in body["error"]
    assert "guest_queue.E014: GUEST_WORKFLOW 'no.such.Workflow' cannot be" in caplog.text
    assert "Traceback" not in caplog.text


# Thirty guests from one test address: no per-client cap here.
@override_settings(
    GUEST_MAX_CONCURRENT_REQUESTS=1, GUEST_SYNC_THREADS=2, GUEST_MAX_REQUESTS_PER_CLIENT=0
)
async def test_waiting_guests_hold_no_threads() -> None:
    import threading

    head = Client("sleep=30")
    await head.start()
    await head.until("processing")
    baseline = threading.active_count()
    waiters = [Client("chunks=1") for _ in range(30)]
    for w in waiters:
        assert await w.start() == 200
        await w.event()
    # Django alone would park one thread per open request (thirty here); the shared pool
    # holds them all in its two. A few threads of the process may start meanwhile and
    # stay or go (asgiref's one sync thread for background work, the history's daemon
    # threads, slow on a busy machine): a margin of three tells those from thirty.
    await settle(lambda: threading.active_count() <= baseline + 2 + 3)
    for client in [*waiters, head]:
        await client.disconnect()
    manager = get_manager()
    await settle(lambda: manager.status()["queue_size"] == manager.status()["active_requests"] == 0)
    assert manager.status()["cancelled_requests"] == 31


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=0, GUEST_HISTORY_ENABLED=False)
async def test_a_finished_request_frees_its_ticket_without_the_garbage_collector() -> None:
    # Django's request cycle leaves reference cycles (its tasks, their contexts) that only
    # the collector frees; a ticket (its record, events, answer) hanging off them would
    # wait for its slowest pass and make it longer. Each request's ticket goes at its end.
    import gc

    from guest_queue.core.backends.base import Ticket

    def live_tickets() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, Ticket))

    async def ask(query: str) -> None:
        client = Client(query)
        assert await client.start() == 200
        await client.finish()

    await ask("chunks=1")  # the manager and its start-up
    gc.collect()
    before = live_tickets()
    gc.disable()
    try:
        for _ in range(5):
            await ask("chunks=2")
        await asyncio.sleep(0.05)  # the workflow tasks' done callbacks
        assert live_tickets() == before
    finally:
        gc.enable()


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=0, GUEST_HISTORY_ENABLED=False)
async def test_a_guest_api_request_leaves_no_garbage_cycles() -> None:
    # Garbage in reference cycles waits for the collector, whose passes then grow with
    # every request in flight: a request through the lean lane frees everything it made
    # as it ends (Django 5.2's handler copy; Django's own leaves its tasks in a cycle).
    import gc

    from guest_queue.asgi.lane_cycle import handle_django_5_2, matching_copy

    if matching_copy() is not handle_django_5_2:
        pytest.skip("the cycle is broken in the Django 5.2 copy only")

    async def ask(query: str) -> None:
        client = Client(query)
        assert await client.start() == 200
        await client.until("workflow_complete")
        # As uvicorn does once the response is complete: the disconnect listener hears it.
        await client.disconnect()

    await ask("chunks=1")
    await asyncio.sleep(0.05)
    # Garbage from something else in the process (another test's background task ending
    # meanwhile, under pytest-xdist) must not be blamed on the requests: a cycle they
    # make shows in every attempt, something else's does not come back each time.
    found: list[str] = []
    for _ in range(3):
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                await ask("chunks=2")
            await asyncio.sleep(0.05)
            gc.collect()
            found = sorted({type(o).__name__ for o in gc.garbage})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        if not found:
            return
    raise AssertionError(f"five requests left reference cycles of {found}")
