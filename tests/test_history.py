"""Request history: written in the background, pruned, robust to outages, flushed at shutdown.

Runs on SQLite always and on PostgreSQL when GUEST_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connections
from django.db.models import QuerySet
from django.test import AsyncClient, override_settings

from guest_queue.history import writer as history_writer
from guest_queue.models import GuestRequest
from guest_queue.runtime import get_history, get_manager, reset_manager

from .conftest import asgi_get
from .core.conftest import GateWorkflow, make_manager, until
from .core.test_resume import Reader
from .services import database_url, delete_prefix, redis_url

DATABASES = ["default", "postgres"]
AVAILABLE = ["default", "postgres"] if os.environ.get("GUEST_TEST_DATABASE_URL") else ["default"]


@pytest.fixture(params=DATABASES)
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name == "postgres":
        database_url()  # skips (fails in CI) without PostgreSQL
    with override_settings(GUEST_HISTORY_DATABASE=name, GUEST_HISTORY_FLUSH_SEC=0.05):
        reset_manager()
        yield name
    # An outage test may have cut this thread's connection: let the teardown flush reconnect.
    connections[name].close()


pytestmark = pytest.mark.django_db(transaction=True, databases=AVAILABLE)


async def restart() -> None:
    """Close this process's manager (flushing its history) and start a new one."""
    await get_manager().close()
    reset_manager()


async def ask(count: int, query: str = "chunks=1") -> list[str]:
    """Run ``count`` requests to the end; their ids in order of arrival."""
    manager = get_manager()
    ids = []
    for _ in range(count):
        ticket = await manager.submit(query, client_hint="c" * 32)
        async for _event in manager.events(ticket):
            pass
        ids.append(ticket.request_id)
    return ids


def rows(alias: str) -> list[GuestRequest]:
    connections[alias].close()  # an outage test may have cut this thread's connection
    try:
        return list(GuestRequest.objects.using(alias).order_by("id"))
    finally:
        connections[alias].close()


async def wait_for_rows(
    alias: str, count: int, timeout: float = 10, *, last: str | None = None
) -> list[GuestRequest]:
    """``count`` rows (the newest being request ``last``, when given: batches land one by one)."""
    async with asyncio.timeout(timeout):
        while True:
            found = await sync_to_async(rows)(alias)
            if len(found) == count and (last is None or str(found[-1].request_id) == last):
                return found
            await asyncio.sleep(0.05)


async def wait_until_idle(count: int, timeout: float = 20) -> None:
    """Until the history writer has written ``count`` rows and holds no more."""
    history = get_history()
    assert history is not None
    async with asyncio.timeout(timeout):
        while history.written < count or history.pending:
            await asyncio.sleep(0.05)


async def test_150_requests_leave_the_100_newest_rows(alias: str) -> None:
    # 2 ms a request: the rows arrive over several flushes, each followed by a prune.
    query = "chunks=1 delay=0.002"
    ids = await ask(150, query)
    await wait_until_idle(150)
    stored = await sync_to_async(rows)(alias)
    assert [str(r.request_id) for r in stored] == ids[50:]
    row = stored[-1]
    assert row.status == "completed" and row.answer_preview == "chunk0 "
    assert row.query == query and row.query_length == len(query) and len(row.query_hash) == 64
    assert row.client_hash == "c" * 32 and ":" in row.server
    assert row.wait_ms is not None and row.processing_ms is not None
    assert row.created_at <= row.started_at <= row.finished_at  # type: ignore[operator]


async def test_shutdown_flushes_the_buffer(alias: str) -> None:
    with override_settings(GUEST_HISTORY_FLUSH_SEC=30):
        await restart()
        ids = await ask(5)
        history = get_history()
        assert history is not None and history.pending == 5
        await get_manager().close()
    stored = await sync_to_async(rows)(alias)
    assert sorted(str(r.request_id) for r in stored) == sorted(ids)


async def test_failed_and_timed_out_requests_are_recorded(alias: str) -> None:
    with override_settings(GUEST_REQUEST_TIMEOUT_SEC=0.1):
        await restart()
        await ask(1, "fail=workflow_error")
        await ask(1, "sleep=5")
    stored = await wait_for_rows(alias, 2)
    assert [(r.status, r.error_code) for r in stored] == [
        ("failed", "workflow_error"),
        ("timeout", "timeout"),
    ]
    assert stored[0].error_message == "The scripted workflow failed."


@override_settings(GUEST_HISTORY_STORE_QUERY=False)
async def test_questions_can_be_kept_out_of_the_database(alias: str) -> None:
    await restart()
    await ask(1, "chunks=1 my private health question")
    await ask(1, "echo: my private health question")
    await ask(1, "fail=workflow_error my private health question")
    stored = await wait_for_rows(alias, 3)
    assert stored[0].query == "" and stored[0].query_length == 35
    assert len(stored[0].query_hash) == 64
    # The answer and the error text often restate the question: neither is kept either.
    assert [r.status for r in stored] == ["completed", "completed", "failed"]
    assert [(r.answer_preview, r.error_message) for r in stored] == [("", "")] * 3
    assert stored[2].error_code == "workflow_error"


async def test_answer_preview_and_error_text_are_kept_by_default(alias: str) -> None:
    await ask(1, "echo: what is genestory")
    await ask(1, "fail=workflow_error")
    stored = await wait_for_rows(alias, 2)
    assert "what is genestory" in stored[0].answer_preview
    assert stored[1].error_message == "The scripted workflow failed."


async def test_hashes_are_salted_hmacs_not_keyed_by_the_raw_secret(alias: str) -> None:
    from django.conf import settings
    from django.utils.crypto import salted_hmac

    await ask(1, "chunks=1 same question")
    await restart()  # flushes: changing a setting replaces the manager
    with override_settings(GUEST_HASH_KEY="a separate key for the keyed hashes, 48 chars long"):
        await ask(1, "chunks=1 same question")
        await restart()
    first, second = await wait_for_rows(alias, 2)
    raw = hmac.new(settings.SECRET_KEY.encode(), b"chunks=1 same question", hashlib.sha256)
    assert first.query_hash != raw.hexdigest()
    assert (
        first.query_hash
        == salted_hmac(
            "guest_queue.history.query", "chunks=1 same question", algorithm="sha256"
        ).hexdigest()
    )
    # GUEST_HASH_KEY separates the hashes from SECRET_KEY: another key, another hash.
    assert second.query_hash != first.query_hash and len(second.query_hash) == 64


@contextmanager
def outage(alias: str) -> Iterator[None]:
    """Make the history database refuse writes for real, then bring it back."""
    settings_dict = connections[alias].settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        # Another process-level connection holds the write lock: "database is locked".
        locker = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("COMMIT")
            locker.close()
        return
    import psycopg

    name = settings_dict["NAME"]
    admin_url = os.environ["GUEST_TEST_DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_outage_loses_no_request_and_history_catches_up(alias: str) -> None:
    with outage(alias):
        started = asyncio.get_running_loop().time()
        ids = await ask(20)
        # Guests are not slowed down by the database being gone.
        assert asyncio.get_running_loop().time() - started < 2
        await asyncio.sleep(0.5)
        history = get_history()
        assert history is not None and history.pending == 20 and history.dropped == 0
    stored = await wait_for_rows(alias, 20, timeout=40)
    assert sorted(str(r.request_id) for r in stored) == sorted(ids)


async def test_outage_buffer_is_bounded_and_drops_the_oldest(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_writer, "BUFFER_SIZE", 5)
    await restart()
    with outage(alias):
        ids = await ask(8)
        _, status = await asgi_get("/api/v1/guest/queue/status")
        assert status["history_dropped"] == 3 and status["completed_requests"] == 8
    stored = await wait_for_rows(alias, 5, timeout=40)
    assert sorted(str(r.request_id) for r in stored) == sorted(ids[3:])


async def test_request_status_falls_back_to_the_database(alias: str) -> None:
    (request_id,) = await ask(1)
    await wait_for_rows(alias, 1)
    await restart()  # memory is empty after a restart
    status, body = await asgi_get(f"/api/v1/guest/queue/request/{request_id}")
    assert status == 200 and body["status"] == "completed" and body["request_id"] == request_id
    assert body["wait_ms"] is not None and body["created_at"]
    status, body = await asgi_get(f"/api/v1/guest/queue/request/{uuid.uuid4()}")
    assert status == 404 and body["code"] == "not_found"


async def test_request_status_is_a_503_while_the_history_database_fails(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await restart()

    def unreachable(self: QuerySet[GuestRequest]) -> GuestRequest | None:
        raise OperationalError("the database is gone")

    # The lookup runs on its own thread (guest_queue.history.lookup), with the sync API.
    monkeypatch.setattr(QuerySet, "first", unreachable)
    response = await AsyncClient().get(f"/api/v1/guest/queue/request/{uuid.uuid4()}")
    # Not a 404: the request may well exist, the history cannot say.
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json() == {
        "error": "Request history is unavailable.",
        "code": "history_unavailable",
        "retry_after": 5,
    }


def test_prune_is_a_single_delete_statement(alias: str) -> None:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    make: Callable[[int], GuestRequest] = lambda i: GuestRequest(  # noqa: E731
        request_id=uuid.uuid4(), status="completed", created_at="2026-01-01T00:00:00Z"
    )
    GuestRequest.objects.using(alias).bulk_create([make(i) for i in range(30)])
    with CaptureQueriesContext(connections[alias]) as queries:
        deleted = GuestRequest.objects.using(alias).prune(10)
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")
    statements = [q["sql"] for q in queries if not q["sql"].upper().startswith(control)]
    assert deleted == 20 and len(statements) == 1
    assert statements[0].startswith("DELETE") and "LIMIT 1 OFFSET 9" in statements[0]
    assert GuestRequest.objects.using(alias).count() == 10


async def test_a_row_the_database_always_refuses_is_dropped_not_blocking(alias: str) -> None:
    if alias != "postgres":
        pytest.skip("SQLite stores a NUL character; PostgreSQL refuses it")
    poison = (await ask(1, "chunks=1 a\x00b"))[0]
    ids = await ask(3)
    stored = await wait_for_rows(alias, 3)
    assert sorted(str(r.request_id) for r in stored) == sorted(ids)
    async with asyncio.timeout(10):
        while (await asgi_get("/api/v1/guest/queue/status"))[1]["history_rejected"] != 1:
            await asyncio.sleep(0.05)
    history = get_history()
    assert history is not None and history.pending == 0
    assert poison not in {str(r.request_id) for r in await sync_to_async(rows)(alias)}


async def test_an_interface_error_does_not_stop_the_writer(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import InterfaceError
    from django.db.models.query import QuerySet

    real = QuerySet.bulk_create
    failures = [InterfaceError("connection already closed")]

    def flaky(self: QuerySet[GuestRequest], *args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(QuerySet, "bulk_create", flaky)
    first = await ask(2)
    await asyncio.sleep(0.3)
    later = await ask(2)
    stored = await wait_for_rows(alias, 4)
    assert sorted(str(r.request_id) for r in stored) == sorted(first + later)


async def test_a_hand_off_nobody_adopts_gets_a_history_row_once(alias: str) -> None:
    """A guest whose worker was drained and who never came back still leaves a row: the
    request ends, as cancelled, in whichever live process claims it (this one here)."""
    url, prefix = redis_url(), f"test-{uuid.uuid4().hex[:12]}"
    redis_settings = {
        "GUEST_QUEUE_BACKEND": {
            "BACKEND": "redis",
            "OPTIONS": {"url": url, "prefix": prefix, "lease_sec": 1.5, "timeout_sec": 0.25},
        },
        # The same limit in every process sharing the queue (each admits up to its own).
        "GUEST_MAX_CONCURRENT_REQUESTS": 1,
        "GUEST_RESUME_GRACE_SEC": 0.5,
    }
    gate = GateWorkflow()
    options = {"url": url, "prefix": prefix, "lease_sec": 1.5, "timeout_sec": 0.25}
    draining = make_manager(
        gate,
        backend="redis",
        backend_options=options,
        max_concurrent=1,
        shutdown_grace_sec=0,
        resume_grace_sec=0.5,
    )
    try:
        with override_settings(**redis_settings):
            reset_manager()
            get_manager().start()  # this process: live, renewing, claiming hand-offs
            running = await draining.submit("running")
            Reader(draining, draining.resumable(running))
            await until(lambda: gate.started == ["running"])
            waiting = await draining.submit("never came back")
            reader = Reader(draining, draining.resumable(waiting))
            await until(lambda: reader.names[:1] == ["queued"])
            draining.begin_drain()
            assert (await reader.done())[-1] == "reconnect"
            found = await wait_for_rows(alias, 1, last=waiting.request_id)
            await asyncio.sleep(1.0)  # more renewal passes: no second row
            assert [(str(r.request_id), r.status) for r in await sync_to_async(rows)(alias)] == [
                (waiting.request_id, "cancelled")
            ]
            assert found[0].query == "never came back"
            gate.open(running.request_id)
            await get_manager().close()
    finally:
        await draining.close()
        reset_manager()
        await delete_prefix(url, prefix)
