"""Resumable requests through the real ASGI app: POST, drop, GET events, cancel."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.test import AsyncClient, override_settings

from genestory.asgi import application
from guest_queue.runtime import get_manager

from .conftest import http_scope, parse_sse, read_stream

CHAT = "/api/v1/guest/chat"


def scope(method: str, path: str, body: bytes = b"", headers: Any = (), query: bytes = b"") -> Any:
    content = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return http_scope(method, path, [(b"host", b"testserver"), *content, *headers], query=query)


class Connection:
    """One SSE connection to the ASGI app, read message by message."""

    def __init__(self, method: str, path: str, body: bytes = b"", **kw: Any) -> None:
        self.app = ApplicationCommunicator(application, scope(method, path, body, **kw))
        self.body = body
        self.buffer = b""
        self.messages: list[str] = []
        self.closed = False

    async def start(self) -> int:
        await self.app.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.app.receive_output(5)
        return int(start["status"])

    async def message(self, timeout: float = 5) -> str | None:
        """The next SSE message (heartbeats skipped); None once the stream has ended."""
        while b"\n\n" not in self.buffer:
            if self.closed:
                return None
            out = await self.app.receive_output(timeout)
            self.buffer += out.get("body", b"")
            self.closed = not out.get("more_body", False)
        raw, self.buffer = self.buffer.split(b"\n\n", 1)
        if raw.startswith(b":"):
            return await self.message(timeout)
        self.messages.append(raw.decode())
        return raw.decode()

    async def event(self) -> dict[str, Any]:
        message = await self.message()
        assert message is not None
        return json.loads(message.split("\n")[0][len("data: ") :])  # type: ignore[no-any-return]

    async def until(self, name: str) -> dict[str, Any]:
        while True:
            event = await self.event()
            if event["event"] == name:
                return event

    async def rest(self) -> list[dict[str, Any]]:
        events = []
        while (message := await self.message()) is not None:
            events.append(json.loads(message.split("\n")[0][len("data: ") :]))
        await self.app.wait(2)
        return events

    async def json(self) -> dict[str, Any]:
        """A JSON response's body; the application has returned."""
        body = (await self.app.receive_output(5))["body"]
        await self.app.wait(2)
        return json.loads(body)  # type: ignore[no-any-return]

    async def disconnect(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(2)


def ask(query: str, **extra: Any) -> Connection:
    return Connection(
        "POST", CHAT, json.dumps({"query": query, "resumable": True, **extra}).encode()
    )


def resume(request_id: str, last_event_id: int | None = None, after: str = "") -> Connection:
    headers = [(b"last-event-id", str(last_event_id).encode())] if last_event_id is not None else []
    query = f"after={after}".encode() if after else b""
    return Connection("GET", f"{CHAT}/{request_id}/events", headers=headers, query=query)


async def settle(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_the_post_stream_numbers_its_messages_and_keeps_one_data_line(
    async_client: AsyncClient,
) -> None:
    for body in ({"query": "chunks=2"}, {"query": "chunks=2", "resumable": True}):
        response = await async_client.post(CHAT, body, content_type="application/json")
        events = parse_sse(await read_stream(response))  # asserts one data: line per message
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["event"] == "workflow_complete"


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_a_dropped_processing_stream_resumes_without_loss_or_duplicates() -> None:
    guest = ask("chunks=6 delay=0.05")
    assert await guest.start() == 200
    first = await guest.until("answer_chunk")
    await guest.disconnect()
    await asyncio.sleep(0.15)  # chunks keep coming while nobody reads
    back = resume(first["request_id"], last_event_id=first["seq"])
    assert await back.start() == 200
    rest = await back.rest()
    assert all(
        m.split("\n")[1] == f"id: {e['seq']}" for m, e in zip(back.messages, rest, strict=True)
    )
    assert [e["seq"] for e in rest] == list(range(first["seq"] + 1, first["seq"] + 1 + len(rest)))
    text = first["data"] + "".join(e["data"] for e in rest if e["event"] == "answer_chunk")
    assert text == "".join(f"chunk{i} " for i in range(6))
    assert rest[-1]["event"] == "workflow_complete"
    status = get_manager().status()
    assert status["completed_requests"] == 1 and status["cancelled_requests"] == 0


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_a_dropped_waiting_guest_keeps_its_place() -> None:
    head, guest, last = ask("sleep=0.4 chunks=1"), ask("chunks=1"), ask("chunks=1")
    for conn in (head, guest):
        await conn.start()
    await head.until("processing")
    queued = await guest.until("queued")
    await last.start()
    assert (await last.until("queued"))["data"]["queue_position"] == 2
    await guest.disconnect()
    await asyncio.sleep(0.05)
    assert get_manager().status()["queue_size"] == 2
    back = resume(queued["request_id"], after=str(queued["seq"]))
    await back.start()
    rest = await back.rest()
    assert [e["event"] for e in rest][-3:] == ["processing", "answer_chunk", "workflow_complete"]
    await head.rest()
    last_events = await last.rest()
    assert last_events[-1]["event"] == "workflow_complete"
    # The resumed guest was answered before the one behind it.
    assert rest[-1]["data"] and get_manager().status()["completed_requests"] >= 2


@override_settings(GUEST_RESUME_GRACE_SEC=0.2, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_no_resume_within_the_grace_cancels_and_then_the_log_expires() -> None:
    guest = ask("sleep=30")
    await guest.start()
    event = await guest.until("processing")
    await guest.disconnect()
    manager = get_manager()
    assert manager.status()["active_requests"] == 1
    await settle(lambda: manager.status()["active_requests"] == 0)
    assert manager.status()["cancelled_requests"] == 1
    gone = resume(event["request_id"])
    assert await gone.start() == 410
    assert (await gone.json())["code"] == "log_expired"


async def test_resume_errors_are_json(async_client: AsyncClient) -> None:
    unknown = await async_client.get(f"{CHAT}/{uuid.uuid4()}/events")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    malformed = await async_client.get(f"{CHAT}/nope/events")
    assert malformed.status_code == 404
    response = await async_client.post(
        CHAT, {"query": "sleep=1", "resumable": True}, content_type="application/json"
    )
    events = response.streaming_content.__aiter__()  # type: ignore[attr-defined]
    first = json.loads((await anext(events))[6:].split(b"\n")[0])
    request_id = first["request_id"]
    for bad in ("x", "-1", "1.5", "99"):
        r = await async_client.get(f"{CHAT}/{request_id}/events", {"after": bad})
        assert r.status_code == 400 and r.json()["code"] == "invalid_after", bad
    r = await async_client.get(f"{CHAT}/{request_id}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 400
    bad_flag = await async_client.post(
        CHAT, {"query": "q", "resumable": "yes"}, content_type="application/json"
    )
    assert bad_flag.status_code == 400 and bad_flag.json()["code"] == "invalid_resumable"
    cancel = await async_client.post(f"{CHAT}/{request_id}/cancel")
    assert cancel.json() == {"request_id": request_id, "status": "cancelled"}
    await events.aclose()


async def test_a_newer_attachment_closes_the_older() -> None:
    guest = ask("sleep=0.3 chunks=2")
    await guest.start()
    queued = await guest.event()
    second = resume(queued["request_id"], after="1")
    await second.start()
    # The POST stream ends at once, before the answer does.
    assert "workflow_complete" not in [e["event"] for e in await guest.rest()]
    events = await second.rest()
    assert events[-1]["event"] == "workflow_complete" and events[0]["seq"] == 2


@pytest.mark.parametrize("resumable", [True, False])
@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_cancel_frees_the_slot_at_once(resumable: bool) -> None:
    body = json.dumps({"query": "sleep=30", "resumable": resumable}).encode()
    guest, nxt = Connection("POST", CHAT, body), ask("chunks=1")
    await guest.start()
    processing = await guest.until("processing")
    await nxt.start()
    await nxt.until("queued")
    cancel = Connection("POST", f"{CHAT}/{processing['request_id']}/cancel")
    assert await cancel.start() == 200
    out = await cancel.json()
    assert out == {"request_id": processing["request_id"], "status": "cancelled"}
    ending = await guest.rest()
    assert ending[-1]["event"] == "error" and ending[-1]["data"]["code"] == "cancelled"
    assert (await nxt.rest())[-1]["event"] == "workflow_complete"
    unknown = Connection("POST", f"{CHAT}/{uuid.uuid4()}/cancel")
    assert await unknown.start() == 404
    assert (await unknown.json())["code"] == "not_found"
