"""Tiers and fairness through Django: the site's GUEST_PRIORITY orders the line; the checks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from django.http import HttpRequest
from django.test import AsyncClient, RequestFactory, override_settings

from guest_queue.guests.tiers import tier_of

from .conftest import parse_sse, read_stream, sse_events
from .test_api import CHAT, post
from .test_checks import check_ids

MEMBERS = {"member": 4, "guest": 1}


def by_header(request: HttpRequest) -> str | None:
    """A GUEST_PRIORITY for the tests: the request names its tier."""
    return request.headers.get("X-Test-Tier")


def broken_priority(request: HttpRequest) -> str:
    raise RuntimeError("bug in the site's priority function")


async def positions(response: Any) -> list[int]:
    """The queue positions a stream announced, until it ended."""
    events = parse_sse(await read_stream(response))
    return [e["data"]["queue_position"] for e in events if e.get("event") == "queued"]


@override_settings(
    GUEST_MAX_CONCURRENT_REQUESTS=1,
    GUEST_TIERS=MEMBERS,
    GUEST_PRIORITY="tests.test_ordering_api.by_header",
)
async def test_a_member_named_by_the_sites_function_goes_ahead_of_a_waiting_guest(
    async_client: AsyncClient,
) -> None:
    busy = await post(async_client, CHAT, {"query": "sleep=1 chunks=1"})
    reading = asyncio.ensure_future(read_stream(busy))
    guest = await post(async_client, CHAT, {"query": "chunks=1"})
    guest_events = sse_events(guest)
    first = await anext(guest_events)
    assert (first["event"], first["data"]["queue_position"]) == ("queued", 1)
    member = await post(
        async_client, CHAT, {"query": "chunks=1"}, headers={"X-Test-Tier": "member"}
    )
    assert [r.status_code for r in (busy, guest, member)] == [200, 200, 200]
    member_seen = asyncio.ensure_future(positions(member))
    rest = [e async for e in guest_events]
    # The guest was first in line; once the member came it was told it is second.
    assert [e["data"]["queue_position"] for e in rest if e["event"] == "queued"][:1] == [2]
    assert await member_seen == [1]
    await reading


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, "guest"),
        ({"X-Test-Tier": "member"}, "member"),
        ({"X-Test-Tier": "platinum"}, "guest"),
    ],
)
def test_the_tier_is_the_functions_when_the_tiers_know_it(
    meta: dict[str, str], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = RequestFactory().get("/", headers=meta)
    priority = "tests.test_ordering_api.by_header"
    with (
        override_settings(GUEST_TIERS=MEMBERS, GUEST_PRIORITY=priority),
        caplog.at_level(logging.WARNING, logger="guest_queue"),
    ):
        assert tier_of(request) == expected
    # A name the tiers do not list is a bug of the site's: logged, ordered as a guest.
    assert ("platinum" in caplog.text) == ("platinum" in meta.values())


def test_a_failing_priority_function_orders_the_request_as_a_guest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with override_settings(GUEST_PRIORITY="tests.test_ordering_api.broken_priority"):
        assert tier_of(RequestFactory().get("/")) == "guest"
    assert "GUEST_PRIORITY" in caplog.text


def test_without_a_priority_function_everyone_is_a_guest() -> None:
    with override_settings(GUEST_TIERS=MEMBERS):
        assert tier_of(RequestFactory().get("/", HTTP_X_TEST_TIER="member")) == "guest"


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("GUEST_PRIORITY", "no.such.function", "guest_queue.E074"),
        ("GUEST_PRIORITY", "guest_queue.conf.DEFAULTS", "guest_queue.E074"),
        ("GUEST_TIERS", {"member": 4}, "guest_queue.E075"),
        ("GUEST_TIERS", {"member": -1, "guest": 1}, "guest_queue.E075"),
        ("GUEST_TIERS", {"member": True, "guest": 1}, "guest_queue.E075"),
        ("GUEST_TIERS", {"": 2, "guest": 1}, "guest_queue.E075"),
        ("GUEST_TIERS", [("guest", 1)], "guest_queue.E075"),
        ("GUEST_FAIRNESS", "lifo", "guest_queue.E076"),
        ("GUEST_FAIRNESS", None, "guest_queue.E076"),
    ],
)
def test_bad_ordering_settings_fail_the_checks(setting: str, value: Any, check_id: str) -> None:
    assert check_id in check_ids(**{setting: value})


def test_good_ordering_settings_pass_the_checks() -> None:
    assert not check_ids(
        GUEST_PRIORITY="tests.test_ordering_api.by_header",
        GUEST_TIERS={"member": 4, "guest": 1, "bulk": 0},
        GUEST_FAIRNESS="fair",
    )
