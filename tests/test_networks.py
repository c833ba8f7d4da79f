"""One IPv6 subscriber, many /64s: the wider /56 and /48 hold a bounded multiple of a client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from guest_queue.guests.clients import client_of, client_of_address, prefix_limits
from guest_queue.runtime import get_manager

from .conftest import read_stream
from .services import delete_prefix, redis_url
from .test_api import CHAT, SIMPLE, post
from .test_checks import check_ids
from .test_fair_share_api import request_from, status_without_a_body
from .test_rate_limit import ClientAt

NETWORK_MESSAGE = "from your network"


def in_56(n56: int, n64: int, n48: int = 0) -> str:
    """An address in the n64-th /64 of the n56-th /56 of the n48-th /48 of 2001:db8::/32."""
    return f"2001:db8:{n48:x}:{n56:02x}{n64:02x}::1"


@pytest.fixture(params=["local", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings for this process's queue, then for the shared queue on Redis."""
    if request.param == "local":
        yield {}
        return
    url, prefix = redis_url(), f"test-{uuid.uuid4().hex[:12]}"
    yield {
        "GUEST_QUEUE_BACKEND": {"BACKEND": "redis", "OPTIONS": {"url": url, "prefix": prefix}},
        "GUEST_SHUTDOWN_GRACE_SEC": 0,
    }
    await delete_prefix(url, prefix)


@contextlib.asynccontextmanager
async def queue_with(backend: dict[str, Any], **settings: Any) -> AsyncIterator[None]:
    """The settings in force, and the manager built under them closed at the end."""
    with override_settings(**backend, **settings, GUEST_HISTORY_ENABLED=False):
        try:
            yield
        finally:
            await get_manager().close()


@pytest.fixture
def empty_cache() -> Iterator[None]:
    caches["default"].clear()
    yield
    caches["default"].clear()


def test_wider_networks_are_extra_ids_of_an_ipv6_client_only() -> None:
    one = client_of(request_from(in_56(1, 1)))
    sibling = client_of(request_from(in_56(1, 2)))
    cousin = client_of(request_from(in_56(2, 1)))
    assert one.id != sibling.id  # two /64s: two clients ...
    assert [m for _, m in one.groups] == [4, 16]  # ... in a /56 (4 times) and a /48 (16 times)
    assert one.groups == sibling.groups  # the same /56 and /48
    assert cousin.groups[0] != one.groups[0] and cousin.groups[1] == one.groups[1]
    assert all("2001" not in group and len(group) == 32 for group, _ in one.groups)
    assert client_of(request_from("198.51.100.7")).groups == ()
    assert client_of(request_from("::ffff:198.51.100.7")).groups == ()
    with override_settings(GUEST_IPV6_PREFIX_LIMITS={}):
        assert client_of_address(in_56(1, 1)).groups == ()
    # JSON from the environment has string keys; narrowest first whatever the order.
    assert prefix_limits({"48": 16, "56": 4}) == ((56, 4), (48, 16))
    for bad in ({64: 2}, {56: 0}, {"x": 2}, {56: 2.5}, {True: 2}, [56], {56: 2, "56": 3}):
        assert prefix_limits(bad) is None


@pytest.mark.parametrize("value", [{64: 4}, {56: 0}, "56:4", {"/56": 4}])
def test_bad_prefix_limits_fail_the_checks(value: Any) -> None:
    assert "guest_queue.E073" in check_ids(GUEST_IPV6_PREFIX_LIMITS=value)


def test_good_prefix_limits_pass_the_checks() -> None:
    assert not check_ids(GUEST_IPV6_PREFIX_LIMITS={"56": 2, "48": 8})
    assert not check_ids(GUEST_IPV6_PREFIX_LIMITS={})


async def test_one_subscribers_64s_hold_at_most_4x_per_56_and_16x_per_48(
    backend: dict[str, Any],
) -> None:
    async def ask(address: str) -> Any:
        return await post(ClientAt(address), CHAT, {"query": "sleep=0.5 chunks=1"})

    held: list[Any] = []
    async with queue_with(backend, GUEST_MAX_REQUESTS_PER_CLIENT=1):
        try:
            # Four /64s of one /56 each hold their one open question ...
            held += [await ask(in_56(1, n64)) for n64 in range(4)]
            assert [r.status_code for r in held] == [200] * 4
            # ... and a fifth /64 of that /56 is refused, though it has nothing open itself.
            refused = await ask(in_56(1, 9))
            assert refused.status_code == 429 and refused.json()["code"] == "client_limit"
            assert NETWORK_MESSAGE in refused.json()["error"]
            assert int(refused["Retry-After"]) >= 1
            # Its /48 holds 16: three more /56s of four /64s each, then no more.
            held += [await ask(in_56(n56, n64)) for n56 in (2, 3, 4) for n64 in range(4)]
            assert [r.status_code for r in held] == [200] * 16
            refused = await ask(in_56(5, 0))
            assert refused.status_code == 429 and NETWORK_MESSAGE in refused.json()["error"]
            # Another /48 and an IPv4 guest are other subscribers.
            held += [await ask(in_56(1, 0, n48=1)), await ask("198.51.100.20")]
            assert [r.status_code for r in held[-2:]] == [200, 200]
            # A /64 already at its own cap is told about its own questions.
            own = await ask(in_56(1, 0))
            assert own.status_code == 429 and "1 question open" in own.json()["error"]
            # One of the /56's questions ends: another /64 of it gets in.
            await read_stream(held.pop(0))
            held.append(await ask(in_56(1, 9)))
            assert held[-1].status_code == 200
        finally:
            await asyncio.gather(*(read_stream(r) for r in held))
        assert get_manager().status()["rejected_client_limit"] == 3


@pytest.mark.usefixtures("empty_cache")
async def test_one_subscribers_64s_share_4x_the_rate_per_56(backend: dict[str, Any]) -> None:
    async def ask(address: str) -> Any:
        return await post(ClientAt(address), SIMPLE, {"query": "chunks=1"})

    async with queue_with(backend, GUEST_RATE_LIMIT="2/1h", GUEST_MAX_REQUESTS_PER_CLIENT=0):
        # A /64 that floods spends its own two and nothing of its neighbours' share.
        flood = [await ask(in_56(1, 0)) for _ in range(6)]
        assert [r.status_code for r in flood] == [200, 200, 429, 429, 429, 429]
        assert "too often" in flood[-1].json()["error"]
        # Three more /64s of the /56: two each, eight in all (4 times 2) ...
        for n64 in (1, 2, 3):
            assert [(await ask(in_56(1, n64))).status_code for _ in range(2)] == [200, 200]
        # ... then the /56 is at its rate, for any of its /64s.
        refused = await ask(in_56(1, 4))
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert NETWORK_MESSAGE in refused.json()["error"]
        assert 1 <= int(refused["Retry-After"]) <= 3600
        # Another /56 of the same /48 has its own (the /48 allows 16 times 2).
        assert (await ask(in_56(2, 0))).status_code == 200


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=1, GUEST_IPV6_PREFIX_LIMITS={56: 2})
async def test_a_56_at_its_cap_is_refused_before_django_runs() -> None:
    held = [await post(ClientAt(in_56(1, n)), CHAT, {"query": "sleep=1 chunks=1"}) for n in (0, 1)]
    assert [r.status_code for r in held] == [200, 200]
    assert await status_without_a_body((in_56(1, 2), 1)) == 429
    assert get_manager().status()["rejected_client_limit"] == 1
    await asyncio.gather(*(read_stream(r) for r in held))
