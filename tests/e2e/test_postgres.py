"""A real server on PostgreSQL (the other e2e servers use SQLite): history survives a restart."""

from __future__ import annotations

import signal

import httpx
import psycopg
import pytest

from ..services import database_url
from .conftest import ServerFactory
from .test_servers import names, stream_events

#: Servers here migrate the database named in GUEST_TEST_DATABASE_URL itself, as do the
#: hanging-database tests (test_failure_modes.py): two migrations of one database at once
#: race (duplicate permissions), so they share one worker.
pytestmark = pytest.mark.xdist_group("postgres-named-database")


async def test_uvicorn_on_postgresql_records_history_and_reads_it_back(
    start_server: ServerFactory,
) -> None:
    url = database_url()
    server = start_server(DATABASE_URL=url, GUEST_HISTORY_FLUSH_SEC="0.05")
    async with httpx.AsyncClient(timeout=30) as client:
        events = await stream_events(client, server.url, "chunks=2 suggest=1")
        assert names(events)[-1] == "workflow_complete"
        request_id = events[0]["request_id"]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) in (0, -signal.SIGTERM), server.output()
    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT status, answer_preview FROM guest_queue_guestrequest WHERE request_id = %s",
            [request_id],
        ).fetchone()
    assert row == ("completed", "chunk0 chunk1 ")
    # A new process has nothing in memory: the status comes from PostgreSQL.
    again = start_server(DATABASE_URL=url)
    async with httpx.AsyncClient(timeout=30) as client:
        found = await client.get(f"{again.url}/api/v1/guest/queue/request/{request_id}")
    assert found.status_code == 200, found.text
    assert found.json()["status"] == "completed" and found.json()["request_id"] == request_id
