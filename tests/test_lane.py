"""The lean lane: the guest API runs GUEST_API_MIDDLEWARE, every other path the site's stack."""

from __future__ import annotations

import json
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db.backends.signals import connection_created
from django.test import override_settings

from genestory.asgi import application as genestory_application
from guest_queue.asgi import SharedSyncThreads
from guest_queue.asgi.lane import GuestAPILane
from guest_queue.asgi.lifespan import ASGIApp

from .conftest import http_scope, parse_sse

SITE_MIDDLEWARE = [*settings.MIDDLEWARE, "tests.lane_middleware.SiteMark"]
API_DEFAULT = [
    "guest_queue.http.middleware.APISecurityMiddleware",
    "guest_queue.http.middleware.ContentLengthMiddleware",
]


class Reply:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.body = body


async def call(
    app: ASGIApp, method: str, path: str, body: bytes = b"", host: bytes = b"testserver"
) -> Reply:
    headers = [(b"host", host)]
    if body:
        headers += [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(body)).encode())]
    scope = http_scope(method, path, headers)
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(5)
    received = b""
    while True:
        message = await communicator.receive_output(5)
        received += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(5)
    return Reply(int(start["status"]), start["headers"], received)


def site(lane: bool) -> ASGIApp:
    """The site's Django app, served as genestory serves it, with or without the lane."""
    django_app = ASGIHandler()
    return SharedSyncThreads(GuestAPILane(django_app) if lane else django_app)


@pytest.fixture
def site_marked() -> Iterator[None]:
    with override_settings(MIDDLEWARE=SITE_MIDDLEWARE):
        yield


async def ask(app: ASGIApp) -> Reply:
    return await call(app, "POST", "/api/v1/guest/chat", json.dumps({"query": "hi"}).encode())


@pytest.mark.usefixtures("site_marked")
async def test_api_paths_skip_the_site_middleware_other_paths_keep_it() -> None:
    app = site(lane=True)
    api = await call(app, "GET", "/api/v1/guest/queue/status")
    assert api.status == 200 and "queue_size" in json.loads(api.body)
    assert "x-site-mark" not in api.headers
    assert "x-frame-options" not in api.headers  # the site's clickjacking middleware
    page = await call(app, "GET", "/")
    assert page.status == 200
    assert page.headers["x-site-mark"] == "1"
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.usefixtures("site_marked")
async def test_api_responses_carry_the_security_headers_of_the_default_lane() -> None:
    reply = await ask(site(lane=True))
    assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "same-origin"
    assert reply.headers["cross-origin-opener-policy"] == "same-origin"
    assert reply.headers["content-type"] == "text/event-stream"
    events = parse_sse(reply.body)
    assert events[0]["event"] == "queued" and events[-1]["event"] == "workflow_complete"


async def test_the_site_security_settings_apply_to_the_lane() -> None:
    with override_settings(SECURE_REFERRER_POLICY="no-referrer", SECURE_CONTENT_TYPE_NOSNIFF=False):
        reply = await call(site(lane=True), "GET", "/api/v1/guest/health")
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert "x-content-type-options" not in reply.headers


async def test_the_lane_refuses_a_host_outside_allowed_hosts_as_the_site_does() -> None:
    app = site(lane=True)
    for path in ("/api/v1/guest/queue/status", "/"):
        reply = await call(app, "GET", path, host=b"evil.example")
        assert reply.status == 400, path
    assert (await call(app, "GET", "/api/v1/guest/queue/status")).status == 200


async def test_the_lane_refuses_a_bad_host_with_the_apis_json_error() -> None:
    reply = await call(site(lane=True), "POST", "/api/v1/guest/chat", b"{}", host=b"evil.example")
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    body = json.loads(reply.body)
    assert body["code"] == "bad_host" and body["error"]


async def test_whole_answers_carry_a_content_length_streams_do_not() -> None:
    app = site(lane=True)
    status = await call(app, "GET", "/api/v1/guest/queue/status")
    assert status.headers["content-length"] == str(len(status.body))
    stream = await ask(app)
    assert "content-length" not in stream.headers


@pytest.mark.usefixtures("site_marked")
async def test_middleware_added_to_the_lane_runs_on_api_paths_only() -> None:
    with override_settings(GUEST_API_MIDDLEWARE=[*API_DEFAULT, "tests.lane_middleware.APIMark"]):
        app = site(lane=True)
    api = await ask(app)
    assert api.headers["x-api-mark"] == "1" and "x-site-mark" not in api.headers
    assert api.headers["x-content-type-options"] == "nosniff"
    page = await call(app, "GET", "/")
    assert "x-api-mark" not in page.headers and page.headers["x-site-mark"] == "1"


@pytest.mark.usefixtures("site_marked")
async def test_an_empty_lane_adds_nothing() -> None:
    with override_settings(GUEST_API_MIDDLEWARE=[]):
        app = site(lane=True)
    reply = await call(app, "GET", "/api/v1/guest/queue/status")
    assert reply.status == 200
    assert "x-content-type-options" not in reply.headers and "x-site-mark" not in reply.headers


@pytest.mark.usefixtures("site_marked")
async def test_without_the_lane_the_api_runs_the_site_stack_as_before() -> None:
    reply = await ask(site(lane=False))
    assert reply.status == 200
    assert reply.headers["x-site-mark"] == "1" and reply.headers["x-frame-options"] == "DENY"
    events = parse_sse(reply.body)
    assert events[-1]["event"] == "workflow_complete"


@pytest.mark.usefixtures("site_marked")
async def test_unknown_api_paths_are_still_json_404s_in_the_lane() -> None:
    reply = await call(site(lane=True), "GET", "/api/v1/guest/nope")
    assert reply.status == 404 and json.loads(reply.body)["code"] == "not_found"
    assert "x-site-mark" not in reply.headers


async def test_lane_requests_send_the_request_signals_to_a_site_receiver_off_the_loop() -> None:
    # A site's receiver may use the database: it must run in a worker thread, as in Django.
    seen: list[str] = []
    loop_thread = threading.current_thread()

    def started(**kwargs: Any) -> None:
        seen.append("started" if threading.current_thread() is not loop_thread else "on loop")

    def finished(**kwargs: Any) -> None:
        seen.append("finished" if threading.current_thread() is not loop_thread else "on loop")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        await ask(site(lane=True))
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert seen == ["started", "finished"]


@pytest.mark.django_db(transaction=True)
async def test_a_database_lookup_in_the_lane_leaves_no_connection_open() -> None:
    opened: list[Any] = []

    def note(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(connection)

    connection_created.connect(note)
    try:
        app = site(lane=True)
        for _ in range(2):  # the second request starts with no connection open
            reply = await call(app, "GET", f"/api/v1/guest/queue/request/{uuid.uuid4()}")
            assert reply.status == 404 and json.loads(reply.body)["code"] == "not_found"
            assert opened and all(wrapper.connection is None for wrapper in opened)
    finally:
        connection_created.disconnect(note)
    assert len(opened) == 2  # one connection per lookup, each closed when its request ended


async def test_genestory_serves_the_api_through_the_lane() -> None:
    reply = await call(genestory_application, "GET", "/api/v1/guest/queue/status")
    assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in reply.headers and "vary" not in reply.headers
    page = await call(genestory_application, "GET", "/")
    assert page.headers["x-frame-options"] == "DENY"


def test_this_django_gets_the_lane_request_cycle() -> None:
    # The signal fast path runs only on a Django whose ASGIHandler.handle the lane
    # has a copy of; a new Django release needs its hash in lane_cycle.COPIES.
    from guest_queue.asgi.lane_cycle import matching_copy

    assert matching_copy() is not None


def test_signals_go_inline_only_while_nothing_but_django_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from guest_queue.asgi import request_signals
    from guest_queue.asgi.lane import GuestAPIHandler

    # The connections this test process has opened elsewhere are not this test's business.
    tracked: weakref.WeakSet[Any] = weakref.WeakSet()
    monkeypatch.setattr(request_signals, "_connections", tracked)
    inline_safe = request_signals.inline_safe
    assert inline_safe(signals.request_started, GuestAPIHandler)
    assert inline_safe(signals.request_finished, GuestAPIHandler)

    def receiver(**kwargs: Any) -> None:
        pass

    signals.request_finished.connect(receiver)
    try:
        assert not inline_safe(signals.request_finished, GuestAPIHandler)
        assert inline_safe(signals.request_started, GuestAPIHandler)
    finally:
        signals.request_finished.disconnect(receiver)

    class OpenConnection:
        connection = object()

    held = OpenConnection()
    tracked.add(held)
    assert not inline_safe(signals.request_started, GuestAPIHandler)
    held.connection = None
    assert inline_safe(signals.request_started, GuestAPIHandler)
