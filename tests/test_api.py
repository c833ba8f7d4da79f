"""The HTTP API as a client sees it: shapes, status codes and JSON errors."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from guest_queue.runtime import get_manager

from .conftest import parse_sse, read_stream

CHAT = "/api/v1/guest/chat"
SIMPLE = "/api/v1/guest/chat/simple"


async def post(client: AsyncClient, url: str, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return await client.post(url, data=data, content_type="application/json", **extra)


async def test_chat_streams_sse_with_the_documented_framing(async_client: AsyncClient) -> None:
    response = await post(async_client, CHAT, {"query": "chunks=3 suggest=2"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    events = parse_sse(await read_stream(response))
    assert [e["event"] for e in events] == [
        "queued", "processing", "answer_chunk", "answer_chunk", "answer_chunk", "workflow_complete",
    ]  # fmt: skip
    assert len({e["request_id"] for e in events}) == 1
    uuid.UUID(events[0]["request_id"], version=4)
    assert events[0]["data"] == {
        "queue_position": 1,
        "queue_size": 0,
        "estimated_wait_sec": 0.0,
        "estimated_wait_range_sec": [0.0, 0.0],
    }
    assert events[-1]["data"] == {
        "suggested_questions": ["Follow-up 0?", "Follow-up 1?"],
        "cached": False,
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_encoding"),
        (b'["query"]', 400, "invalid_json"),
        (b"{}", 400, "missing_query"),
        (b'{"query": 42}', 400, "invalid_query"),
        (b'{"query": null}', 400, "invalid_query"),
        (b'{"query": "   "}', 400, "empty_query"),
        (b'{"query": "a\\u0000b"}', 400, "invalid_query"),
        (b'{"query": "\\ud800"}', 400, "invalid_query"),
        (json.dumps({"query": "x" * 2001}).encode(), 400, "query_too_long"),
        (json.dumps({"query": "x", "pad": "y" * 70000}).encode(), 413, "body_too_large"),
        (b"", 400, "invalid_json"),
        (b"[" * 30000 + b"]" * 30000, 400, "invalid_json"),
    ],
)
@pytest.mark.parametrize("url", [CHAT, SIMPLE])
async def test_bad_input_gets_a_json_error(
    async_client: AsyncClient, url: str, body: bytes, status: int, code: str
) -> None:
    response = await post(async_client, url, body)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert response.json()["error"]
    assert get_manager().status()["total_requests"] == 0


@override_settings(GUEST_MAX_QUERY_CHARS=10, GUEST_MAX_BODY_BYTES=100)
async def test_limits_follow_settings(async_client: AsyncClient) -> None:
    assert (await post(async_client, SIMPLE, {"query": "x" * 11})).json()[
        "code"
    ] == "query_too_long"
    assert (await post(async_client, SIMPLE, {"query": "x" * 10})).status_code == 200
    big = await post(async_client, SIMPLE, {"query": "x", "pad": "y" * 100})
    assert big.status_code == 413


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", CHAT),
        ("put", SIMPLE),
        ("post", "/api/v1/guest/queue/status"),
        ("delete", "/api/v1/guest/health"),
    ],
)
async def test_wrong_method_is_a_json_405(async_client: AsyncClient, method: str, url: str) -> None:
    response = await getattr(async_client, method)(url)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response["Allow"] in ("GET", "POST")


@pytest.mark.parametrize(
    "char",
    [
        *map(chr, [0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x0D, 0x1B, 0x1C, 0x1F, 0x7F]),
        *map(chr, [0x80, 0x85, 0x9B, 0x9F]),  # C1, including NEL and CSI
        *map(chr, [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069]),
    ],
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
async def test_control_and_bidi_override_characters_are_refused(
    async_client: AsyncClient, char: str, where: str
) -> None:
    text = {"start": char + "what is dna", "middle": f"what {char}is dna", "end": "dna" + char}
    response = await post(async_client, SIMPLE, {"query": "echo: " + text[where]})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_query"
    # Refused, not cleaned: nothing reached the workflow, the history or its CSV export.
    assert get_manager().stats.total == 0


async def test_tabs_and_newlines_are_allowed(async_client: AsyncClient) -> None:
    response = await post(async_client, SIMPLE, {"query": "echo: line one\n\tline two"})
    assert response.status_code == 200
    assert response.json()["answer"] == "line one\n\tline two"


@pytest.mark.parametrize("url", [CHAT, SIMPLE])
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "text/json",
        "",
    ],
)
async def test_a_post_body_must_be_json(
    async_client: AsyncClient, url: str, content_type: str
) -> None:
    # text/plain and forms need no CORS preflight: a third-party page could post these.
    body = json.dumps({"query": "chunks=1"}).encode()
    response = await async_client.generic("POST", url, body, content_type=content_type)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert get_manager().stats.total == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;Charset=UTF-8"],
)
async def test_json_with_or_without_a_charset_is_accepted(
    async_client: AsyncClient, content_type: str
) -> None:
    body = json.dumps({"query": "chunks=1"}).encode()
    response = await async_client.generic("POST", SIMPLE, body, content_type=content_type)
    assert response.status_code == 200
    assert response.json()["status"] == "completed"


@pytest.mark.parametrize("path", ["nope", "%0A", "chat%0A", "x/%0D%0Ay", "%E2%80%AE"])
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
async def test_unknown_api_path_is_a_json_404(method: str, path: str) -> None:
    # A client that enforces CSRF as a browser's request would meet it: no HTML 403.
    client = AsyncClient(enforce_csrf_checks=True)
    response = await getattr(client, method)(f"/api/v1/guest/{path}", content_type="text/plain")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "No such endpoint.", "code": "not_found"}


async def test_simple_chat_returns_the_whole_answer(async_client: AsyncClient) -> None:
    response = await post(async_client, SIMPLE, {"query": "chunks=4 suggest=1"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "request_id", "status", "answer", "suggested_questions",
        "cached", "wait_ms", "processing_ms",
    }  # fmt: skip
    assert body["status"] == "completed"
    assert body["answer"] == "chunk0 chunk1 chunk2 chunk3 "
    assert body["suggested_questions"] == ["Follow-up 0?"]
    assert body["cached"] is False and body["wait_ms"] >= 0 and body["processing_ms"] >= 0


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("fail=workflow_error", 502, "workflow_error"),
        ("fail=crash", 502, "internal"),
        ("fail=unavailable", 503, "unavailable"),
    ],
)
async def test_simple_chat_maps_failures_to_status_codes(
    async_client: AsyncClient, query: str, status: int, code: str
) -> None:
    response = await post(async_client, SIMPLE, {"query": query})
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["error"] and body["status"] == "failed"
    assert "secret internal detail" not in response.content.decode()
    # A 503 says when to come back; a 502 (this answer failed) does not.
    assert response.get("Retry-After") == ("5" if status == 503 else None)


@override_settings(GUEST_REQUEST_TIMEOUT_SEC=0.2, GUEST_TIMEOUT_FALLBACK="Please try later.")
async def test_simple_chat_timeout_is_a_504_with_the_fallback(async_client: AsyncClient) -> None:
    response = await post(async_client, SIMPLE, {"query": "sleep=5"})
    assert response.status_code == 504
    body = response.json()
    assert body["status"] == "timeout" and body["code"] == "timeout"
    assert body["answer"] == "Please try later."


@override_settings(GUEST_REQUEST_TIMEOUT_SEC=0.2, GUEST_TIMEOUT_FALLBACK="Please try later.")
async def test_stream_timeout_sends_fallback_then_timeout(async_client: AsyncClient) -> None:
    response = await post(async_client, CHAT, {"query": "chunks=1 sleep=5"})
    events = parse_sse(await read_stream(response))
    assert [e["event"] for e in events] == ["queued", "processing", "answer_chunk", "timeout"]
    assert events[-2]["data"] == "Please try later."
    assert events[-1]["data"]["timeout_sec"] == 0.2
    assert get_manager().status()["timeout_requests"] == 1


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1, GUEST_MAX_QUEUE_SIZE=1)
async def test_full_queue_is_a_429_with_retry_after(async_client: AsyncClient) -> None:
    running = await post(async_client, CHAT, {"query": "sleep=0.3"})
    waiting = await post(async_client, CHAT, {"query": "sleep=0"})
    refused = await post(async_client, CHAT, {"query": "one too many"})
    assert refused.status_code == 429
    assert refused.json()["code"] == "queue_full"
    assert int(refused["Retry-After"]) >= 1
    await asyncio.gather(read_stream(running), read_stream(waiting))
    status = get_manager().status()
    assert status["rejected_requests"] == status["rejected_queue_full"] == 1
    assert status["total_requests"] == 2 and status["completed_requests"] == 2


async def test_status_has_every_documented_field(async_client: AsyncClient) -> None:
    await post(async_client, SIMPLE, {"query": "chunks=1"})
    response = await async_client.get("/api/v1/guest/queue/status")
    body = response.json()
    assert set(body) == {
        "queue_size", "active_requests", "max_concurrent_requests", "concurrency", "max_queue_size",
        "request_timeout_sec", "total_requests", "completed_requests", "failed_requests",
        "timeout_requests", "cancelled_requests", "rejected_requests", "rejected_queue_full",
        "rejected_client_limit", "rejected_rate_limited", "rejected_wait_too_long",
        "max_requests_per_client", "cache_hits", "avg_wait_ms", "avg_processing_ms",
        "estimated_wait_error_p50_sec", "accepting", "uptime_sec", "history_dropped",
        "history_rejected",
        "backend",
    }  # fmt: skip
    assert body["backend"] == "local"
    assert body["total_requests"] == body["completed_requests"] == 1
    assert body["max_concurrent_requests"] == 3 and body["max_queue_size"] == 50
    assert body["accepting"] is True


async def test_request_status_from_memory(async_client: AsyncClient) -> None:
    done = (await post(async_client, SIMPLE, {"query": "chunks=1"})).json()
    response = await async_client.get(f"/api/v1/guest/queue/request/{done['request_id']}")
    body = response.json()
    assert body["status"] == "completed" and body["request_id"] == done["request_id"]
    for key in ("created_at", "started_at", "finished_at", "wait_ms", "processing_ms", "cached"):
        assert key in body


@override_settings(GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_request_status_shows_the_queue_position(async_client: AsyncClient) -> None:
    running = await post(async_client, CHAT, {"query": "sleep=0.3"})
    waiting = await post(async_client, CHAT, {"query": "chunks=1"})
    first = await anext(aiter(waiting.streaming_content))
    request_id = json.loads(first[6:])["request_id"]
    body = (await async_client.get(f"/api/v1/guest/queue/request/{request_id}")).json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    await asyncio.gather(read_stream(running), read_stream(waiting))


@pytest.mark.django_db
# A stable id for the random UUID: pytest-xdist's workers must collect the same tests.
@pytest.mark.parametrize(
    "request_id", ["not-a-uuid", pytest.param(str(uuid.uuid4()), id="unknown-uuid"), "../../etc"]
)
async def test_unknown_request_is_a_json_404(async_client: AsyncClient, request_id: str) -> None:
    response = await async_client.get(f"/api/v1/guest/queue/request/{request_id}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_health_ok(async_client: AsyncClient) -> None:
    response = await async_client.get("/api/v1/guest/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["workflow"] == "available"
    assert body["queue"]["accepting"] is True


@override_settings(GUEST_WORKFLOW="tests.workflows.DownWorkflow")
async def test_unavailable_workflow_gives_503_everywhere(async_client: AsyncClient) -> None:
    health = await async_client.get("/api/v1/guest/health")
    assert health.status_code == 503 and health.json()["workflow"] == "unavailable"
    assert health["Retry-After"] == "5"
    for url in (CHAT, SIMPLE):
        response = await post(async_client, url, {"query": "hello"})
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        # The availability cache period (5 s): the earliest the answer can change.
        assert response["Retry-After"] == "5"


async def test_draining_refuses_new_requests_and_health_says_so(async_client: AsyncClient) -> None:
    manager = get_manager()
    await manager.drain()
    response = await post(async_client, CHAT, {"query": "hello"})
    assert response.status_code == 503 and response.json()["code"] == "shutting_down"
    assert response["Retry-After"] == "5"
    health = await async_client.get("/api/v1/guest/health")
    assert health.status_code == 503 and health.json()["queue"]["accepting"] is False


async def test_demo_page_is_served(async_client: AsyncClient) -> None:
    response = await async_client.get("/")
    assert response.status_code == 200
    assert b"/api/v1/guest/chat" in response.content


@pytest.mark.django_db  # close() sends request_finished, whose receivers touch connections
async def test_closing_a_stream_that_never_started_releases_its_place() -> None:
    """A client can leave between the view and the first send: close() alone must free the slot."""
    from asgiref.sync import sync_to_async
    from django.test import RequestFactory

    from guest_queue.http.views import chat

    request = RequestFactory().post(CHAT, {"query": "chunks=1"}, content_type="application/json")
    response = await chat(request)
    manager = get_manager()
    assert manager.status()["active_requests"] == 1
    await sync_to_async(response.close)()
    async with asyncio.timeout(2):
        while manager.status()["active_requests"]:
            await asyncio.sleep(0.01)
    assert manager.status()["cancelled_requests"] == 1
