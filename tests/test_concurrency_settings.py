"""GUEST_MAX_CONCURRENT_REQUESTS = "auto": the setting, its checks, and where the limit shows."""

from __future__ import annotations

from typing import Any

from django.core.checks import run_checks
from django.test import AsyncClient, override_settings

from guest_queue.conf import app_settings
from guest_queue.runtime import get_manager

from .test_metrics import ON, scrape

STATUS = "/api/v1/guest/queue/status"
HEALTH = "/api/v1/guest/health"
AUTO = {"GUEST_MAX_CONCURRENT_REQUESTS": "auto"}


def check_ids(**overrides: Any) -> set[str]:
    with override_settings(**overrides):
        return {m.id for m in run_checks() if m.id and m.id.startswith("guest_queue.")}


def test_auto_reads_as_an_adaptive_limit_between_the_floor_and_the_ceiling() -> None:
    with override_settings(**AUTO, GUEST_CONCURRENCY_FLOOR=2, GUEST_CONCURRENCY_CEILING=12):
        config = app_settings.queue_config()
    assert (config.adaptive, config.concurrency_floor, config.max_concurrent) == (True, 2, 12)
    with override_settings(GUEST_MAX_CONCURRENT_REQUESTS=5, GUEST_CONCURRENCY_CEILING=12):
        config = app_settings.queue_config()
    assert (config.adaptive, config.max_concurrent) == (False, 5)  # the bounds are ignored


def test_the_checks_take_auto_and_refuse_bad_bounds() -> None:
    assert check_ids(**AUTO) == set()
    assert check_ids(GUEST_MAX_CONCURRENT_REQUESTS="AUTO") == {"guest_queue.E001"}
    assert check_ids(**AUTO, GUEST_CONCURRENCY_FLOOR=0) == {"guest_queue.E120"}
    assert check_ids(**AUTO, GUEST_CONCURRENCY_CEILING="many") == {"guest_queue.E121"}
    assert check_ids(**AUTO, GUEST_CONCURRENCY_FLOOR=8, GUEST_CONCURRENCY_CEILING=4) == {
        "guest_queue.E122"
    }
    # Bounds a fixed limit does not use are not held against it.
    assert check_ids(GUEST_CONCURRENCY_FLOOR=8, GUEST_CONCURRENCY_CEILING=4) == set()


@override_settings(**ON, **AUTO, GUEST_CONCURRENCY_FLOOR=2, GUEST_CONCURRENCY_CEILING=10)
async def test_status_health_and_metrics_show_the_limit_in_use(async_client: AsyncClient) -> None:
    status = (await async_client.get(STATUS)).json()
    assert status["max_concurrent_requests"] == 2  # auto starts at its floor
    assert status["concurrency"] == {"mode": "auto", "floor": 2, "ceiling": 10}
    health = (await async_client.get(HEALTH)).json()
    assert health["queue"]["max_concurrent_requests"] == 2
    assert health["queue"]["concurrency"]["mode"] == "auto"
    assert (await scrape(async_client))[("guest_queue_slots", ())] == 2
    get_manager().upstream_busy(60.0)  # the workflow's upstream said it is overloaded
    assert (await async_client.get(STATUS)).json()["max_concurrent_requests"] == 1
    assert (await scrape(async_client))[("guest_queue_slots", ())] == 1


async def test_a_fixed_limit_shows_as_fixed(async_client: AsyncClient) -> None:
    status = (await async_client.get(STATUS)).json()
    assert status["max_concurrent_requests"] == 3
    assert status["concurrency"] == {"mode": "fixed", "floor": 3, "ceiling": 3}
