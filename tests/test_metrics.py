"""The Prometheus endpoint as a scraper sees it, and the figures behind it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.test import AsyncClient, override_settings
from prometheus_client.parser import text_string_to_metric_families

from guest_queue.core.records import RequestRecord, Status
from guest_queue.observe import metrics
from guest_queue.runtime import get_manager

from .conftest import read_stream

ROOT = Path(__file__).resolve().parent.parent
METRICS = "/api/v1/guest/metrics"
CHAT = "/api/v1/guest/chat"
SIMPLE = "/api/v1/guest/chat/simple"
ON = {"GUEST_METRICS_ENABLED": True}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def scrape(client: AsyncClient, **headers: str) -> dict[Any, float]:
    response = await client.get(METRICS, headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def outcome(found: dict[Any, float], name: str, code: str = "") -> float:
    return found.get(("guest_queue_requests_total", (("code", code), ("outcome", name))), 0.0)


def count(found: dict[Any, float], histogram: str) -> float:
    return found.get((f"guest_queue_{histogram}_seconds_count", ()), 0.0)


async def post(client: AsyncClient, url: str, query: str) -> Any:
    return await client.post(
        url, data=json.dumps({"query": query}), content_type="application/json"
    )


async def test_the_endpoint_is_a_json_404_when_metrics_are_off(async_client: AsyncClient) -> None:
    response = await async_client.get(METRICS)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@override_settings(**ON)
async def test_finished_requests_are_counted_by_outcome_and_timed(
    async_client: AsyncClient,
) -> None:
    before = await scrape(async_client)
    assert (await post(async_client, SIMPLE, "chunks=2")).status_code == 200
    assert (await post(async_client, SIMPLE, "fail=workflow_error")).status_code == 502
    after = await scrape(async_client)
    assert outcome(after, "completed") == outcome(before, "completed") + 1
    assert outcome(after, "failed") == outcome(before, "failed") + 1
    assert count(after, "wait") == count(before, "wait") + 2
    assert count(after, "processing") == count(before, "processing") + 2
    # Only the completed answer produced a chunk.
    assert count(after, "first_chunk") == count(before, "first_chunk") + 1
    assert after[("guest_queue_slots", ())] == 3
    assert after[("guest_queue_waiting", ())] == 0
    assert after[("guest_queue_active", ())] == 0


@override_settings(**ON, GUEST_MAX_CONCURRENT_REQUESTS=1, GUEST_MAX_QUEUE_SIZE=1)
async def test_gauges_show_the_line_and_refusals_carry_their_code(
    async_client: AsyncClient,
) -> None:
    before = await scrape(async_client)
    running = await post(async_client, CHAT, "sleep=0.5")
    waiting = await post(async_client, CHAT, "sleep=0")
    refused = await post(async_client, CHAT, "one too many")
    assert refused.status_code == 429
    during = await scrape(async_client)
    assert during[("guest_queue_active", ())] == 1
    assert during[("guest_queue_waiting", ())] == 1
    assert during[("guest_queue_slots", ())] == 1
    assert (
        outcome(during, "rejected", "queue_full") == outcome(before, "rejected", "queue_full") + 1
    )
    await asyncio.gather(read_stream(running), read_stream(waiting))
    after = await scrape(async_client)
    assert outcome(after, "completed") == outcome(before, "completed") + 2
    assert after[("guest_queue_active", ())] == 0


@override_settings(**ON, GUEST_MAX_REQUESTS_PER_CLIENT=1, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_refusals_answered_before_django_runs_are_counted_too(
    async_client: AsyncClient,
) -> None:
    """The ASGI guard (``client_guard``) refuses a client at its cap without the view."""
    from .test_asgi import Client as AsgiClient
    from .test_fair_share_api import status_without_a_body

    before = await scrape(async_client)
    # Held past the guard's refusal delay (0.5 s), however slow the machine: a request that
    # ends within the delay lets the refused one in after all.
    held = AsgiClient("sleep=2 chunks=1")
    assert await held.start() == 200
    assert await status_without_a_body(("127.0.0.1", 50001)) == 429
    during = await scrape(async_client)
    await held.finish()
    code = "client_limit"
    assert outcome(during, "rejected", code) == outcome(before, "rejected", code) + 1


@override_settings(**ON, GUEST_CACHE_ENABLED=True)
async def test_cache_hits_are_counted(async_client: AsyncClient) -> None:
    before = await scrape(async_client)
    for _ in range(2):
        assert (await post(async_client, SIMPLE, "chunks=2 cache me")).status_code == 200
    after = await scrape(async_client)
    hits = ("guest_queue_cache_hits_total", ())
    assert after[hits] == before.get(hits, 0) + 1


@override_settings(**ON, GUEST_METRICS_TOKEN="s3cret-token")
async def test_a_token_is_required_when_set(async_client: AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        response = await async_client.get(METRICS, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    found = await scrape(async_client, Authorization="Bearer s3cret-token")
    assert ("guest_queue_slots", ()) in found


@override_settings(**ON)
async def test_the_endpoint_answers_get_only(async_client: AsyncClient) -> None:
    response = await async_client.post(METRICS)
    assert response.status_code == 405
    assert response["Allow"] == "GET"


@override_settings(**ON)
async def test_history_drops_are_counted_once(async_client: AsyncClient) -> None:
    class History:
        dropped = 0

    history = History()
    feed = metrics.ManagerMetrics(get_manager(), history)
    before = await scrape(async_client)
    record = RequestRecord(request_id="r", query="q")
    record.mark_finished(Status.FAILED, "x", "y")
    history.dropped = 3
    feed.finished(record)
    feed.finished(record)
    after = await scrape(async_client)
    key = ("guest_queue_history_dropped_total", ())
    assert after[key] == before.get(key, 0) + 3


def test_without_prometheus_client_the_app_imports_and_reports_it() -> None:
    """The extra is optional: importing works; enabled metrics are a check error, and the
    queue refuses to start on a failing check (503 misconfigured), never a 500."""
    script = """
import sys
sys.modules["prometheus_client"] = None  # as if not installed
import django
django.setup()
from django.core.checks import run_checks
from django.test import Client, override_settings
with override_settings(GUEST_METRICS_ENABLED=True, ALLOWED_HOSTS=["*"]):
    ids = {m.id for m in run_checks()}
    status = Client().get("/api/v1/guest/metrics").status_code
print(sorted(i for i in ids if i.startswith("guest_queue.")), status)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["['guest_queue.E080']", "503"]
    assert "prometheus_client" in done.stderr
