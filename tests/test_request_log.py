"""One structured log line per finished request, without the guest's words."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import AsyncClient

from guest_queue.guests.hashing import CLIENT, keyed_hash

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = "/api/v1/guest/chat/simple"
FIELDS = {
    "request_id",
    "outcome",
    "code",
    "wait_ms",
    "processing_ms",
    "first_chunk_ms",
    "cached",
    "client",
}


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "guest_queue.requests"]


async def ask(client: AsyncClient, query: str) -> dict[str, object]:
    response = await client.post(
        SIMPLE, data=json.dumps({"query": query}), content_type="application/json"
    )
    body: dict[str, object] = response.json()
    return body


async def test_a_finished_request_logs_one_line_with_its_fields(
    async_client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue.requests")
    secret = "echo: my private medical question"
    body = await ask(async_client, secret)
    [line] = request_lines(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage() == f"request {body['request_id']} completed"
    fields = {name: getattr(line, name) for name in FIELDS}
    assert fields["request_id"] == body["request_id"]
    assert fields["outcome"] == "completed" and fields["code"] is None
    assert fields["wait_ms"] == body["wait_ms"]
    assert fields["processing_ms"] == body["processing_ms"]
    assert isinstance(fields["first_chunk_ms"], int)
    assert 0 <= fields["first_chunk_ms"] <= fields["wait_ms"] + fields["processing_ms"] + 1
    assert fields["cached"] is False
    # The keyed hash of the client's address (the test client's is 127.0.0.1), not the address.
    assert fields["client"] == keyed_hash(CLIENT, "127.0.0.1")[:32]
    # Neither the question nor the answer, in the message or in any field.
    for value in [line.getMessage(), *map(str, vars(line).values())]:
        assert "private" not in value and "medical" not in value


async def test_a_failure_logs_its_outcome_and_code(
    async_client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guest_queue.requests")
    body = await ask(async_client, "fail=workflow_error")
    [line] = request_lines(caplog)
    assert line.getMessage() == f"request {body['request_id']} failed (workflow_error)"
    fields = vars(line)
    assert fields["outcome"] == "failed" and fields["code"] == "workflow_error"
    assert fields["first_chunk_ms"] is None


def test_the_demo_logs_json_lines_with_the_fields_as_keys() -> None:
    """LOG_FORMAT=json (python-json-logger, a dev requirement only): each field is a key."""
    pytest.importorskip("pythonjsonlogger")
    script = """
import django
django.setup()
from guest_queue.core.records import RequestRecord, Status
from guest_queue.observe.request_log import log_finished
record = RequestRecord(request_id="r-1", query="secret words", client_hint="abc")
record.mark_started()
record.add_chunk("answer words")
record.mark_finished(Status.COMPLETED, None, None)
log_finished(record)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "genestory.settings", "LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    assert line["message"] == "request r-1 completed"
    assert line["name"] == "guest_queue.requests" and line["levelname"] == "INFO"
    assert {k: line[k] for k in ("request_id", "outcome", "code", "cached", "client")} == {
        "request_id": "r-1",
        "outcome": "completed",
        "code": None,
        "cached": False,
        "client": "abc",
    }
    assert isinstance(line["first_chunk_ms"], int) and isinstance(line["processing_ms"], int)
    assert "secret" not in done.stderr and "answer words" not in done.stderr
