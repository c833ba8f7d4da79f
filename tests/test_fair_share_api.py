"""Fair share through Django: who a client is, the 429s, the checks, the page and the admin."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.cache import caches
from django.http import HttpRequest
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.utils import translation

from guest_queue.guests.clients import address_key, client_id
from guest_queue.guests.ratelimit import parse_rate
from guest_queue.http.pages import ui_strings
from guest_queue.models import GuestRequest
from guest_queue.runtime import get_manager

from .conftest import read_stream
from .services import closed_port, redis_url
from .test_api import CHAT, SIMPLE, post
from .test_checks import check_ids


class ElsewhereClient(AsyncClient):
    """A test client on another address (the ASGI scope's ``client``)."""

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)  # type: ignore[misc]
        scope["client"] = ["203.0.113.9", 40000]
        return scope


async def from_elsewhere(async_client: AsyncClient) -> Any:
    """A quick question from another address."""
    return await post(ElsewhereClient(), SIMPLE, {"query": "chunks=1"})


def request_from(address: str, **meta: Any) -> HttpRequest:
    return RequestFactory().get("/", REMOTE_ADDR=address, **meta)


def by_header(request: HttpRequest) -> str:
    """A GUEST_CLIENT_KEY for the tests: the client names itself."""
    return str(request.headers.get("X-Test-Client", ""))


def broken_key(request: HttpRequest) -> str:
    raise RuntimeError("bug in the site's key function")


def test_the_default_key_is_the_address_with_ipv6_grouped_by_64() -> None:
    assert address_key(request_from("203.0.113.7")) == "203.0.113.7"
    assert address_key(request_from("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert address_key(request_from("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert address_key(request_from("2001:db8:1:3::1")) == "2001:db8:1:3::/64"
    assert address_key(request_from("::ffff:203.0.113.7")) == "203.0.113.7"
    # One subscriber's /64 is one client; the address itself never leaves as such.
    same = client_id(request_from("2001:db8:1:2::1")), client_id(request_from("2001:db8:1:2::2"))
    assert same[0] == same[1] and "2001" not in same[0] and len(same[0]) == 32
    assert client_id(request_from("203.0.113.7")) != client_id(request_from("203.0.113.8"))


@override_settings(GUEST_CLIENT_KEY="tests.test_fair_share_api.broken_key")
def test_client_ids_are_the_salted_hmac_of_the_key_under_the_current_secret() -> None:
    from django.utils.crypto import salted_hmac

    from guest_queue.guests.hashing import CLIENT

    def expected(secret: str | None) -> str:
        return salted_hmac(CLIENT, "203.0.113.7", secret=secret, algorithm="sha256").hexdigest()

    assert client_id(request_from("203.0.113.7")) == expected(None)[:32]
    # The derived key is kept per secret: a new key gives new ids at once.
    with override_settings(GUEST_HASH_KEY="another key for the keyed hashes, 40 chars"):
        other = client_id(request_from("203.0.113.7"))
        assert other == expected("another key for the keyed hashes, 40 chars")[:32]
    assert client_id(request_from("203.0.113.7")) == expected(None)[:32]


def test_a_failing_key_function_falls_back_to_the_address() -> None:
    assert client_id(request_from("203.0.113.7")) == client_id(request_from("203.0.113.7"))


def test_rates_parse() -> None:
    assert parse_rate("20/10m") == (20, 600)
    assert parse_rate("5/s") == (5, 1) and parse_rate(" 100 / 1h ") == (100, 3600)
    for bad in ("20", "20/10d", "0/1m", "20/0s", "x/1m", 20, None):
        assert parse_rate(bad) is None


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("GUEST_MAX_REQUESTS_PER_CLIENT", -1, "guest_queue.E070"),
        ("GUEST_MAX_REQUESTS_PER_CLIENT", "3", "guest_queue.E070"),
        ("GUEST_RATE_LIMIT", "20 per minute", "guest_queue.E071"),
        ("GUEST_CLIENT_KEY", "no.such.function", "guest_queue.E072"),
        ("GUEST_CLIENT_KEY", "guest_queue.conf.DEFAULTS", "guest_queue.E072"),
    ],
)
def test_bad_fair_share_settings_fail_the_checks(setting: str, value: Any, check_id: str) -> None:
    assert check_id in check_ids(**{setting: value})


def test_good_fair_share_settings_pass_the_checks() -> None:
    assert not check_ids(
        GUEST_RATE_LIMIT="20/10m",
        GUEST_CLIENT_KEY="tests.test_fair_share_api.by_header",
        GUEST_MAX_REQUESTS_PER_CLIENT=0,
    )


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=1)
async def test_one_more_than_the_cap_is_a_429_client_limit(async_client: AsyncClient) -> None:
    held = await post(async_client, CHAT, {"query": "sleep=0.3 chunks=1"})
    refused = await post(async_client, CHAT, {"query": "another"})
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "client_limit" and "1 question open" in body["error"]
    assert int(refused["Retry-After"]) >= 1
    # Another address is another client.
    other = await from_elsewhere(async_client)
    assert other.status_code == 200
    await read_stream(held)
    assert (await post(async_client, SIMPLE, {"query": "chunks=1"})).status_code == 200
    status = get_manager().status()
    assert status["rejected_client_limit"] == status["rejected_requests"] == 1
    assert status["total_requests"] == 3


@override_settings(
    GUEST_MAX_REQUESTS_PER_CLIENT=1, GUEST_CLIENT_KEY="tests.test_fair_share_api.by_header"
)
async def test_a_site_can_key_clients_by_its_own_function(async_client: AsyncClient) -> None:
    held = [
        await post(async_client, CHAT, {"query": "sleep=0.3"}, headers={"X-Test-Client": name})
        for name in ("alice", "bob")
    ]
    assert [r.status_code for r in held] == [200, 200]
    again = await post(async_client, CHAT, {"query": "x"}, headers={"X-Test-Client": "alice"})
    assert again.status_code == 429 and again.json()["code"] == "client_limit"
    await asyncio.gather(*(read_stream(r) for r in held))


@override_settings(GUEST_RATE_LIMIT="2/1h")
async def test_the_rate_limit_is_a_429_rate_limited_until_the_window_ends(
    async_client: AsyncClient,
) -> None:
    caches["default"].clear()
    for _ in range(2):
        assert (await post(async_client, SIMPLE, {"query": "chunks=1"})).status_code == 200
    refused = await post(async_client, SIMPLE, {"query": "chunks=1"})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 3600
    other = await from_elsewhere(async_client)
    assert other.status_code == 200
    status = get_manager().status()
    assert status["rejected_rate_limited"] == 1 and status["total_requests"] == 3


@override_settings(GUEST_RATE_LIMIT="1/1h")
async def test_a_draining_worker_refuses_before_counting_the_rate(
    async_client: AsyncClient,
) -> None:
    """nginx resends its 503 shutting_down to another worker, which counts the question."""
    caches["default"].clear()
    await get_manager().drain()
    for _ in range(2):
        response = await post(async_client, CHAT, {"query": "chunks=1"})
        assert response.status_code == 503 and response.json()["code"] == "shutting_down"
    window = int(time.time() // 3600)
    key = f"guest_queue:rate:3600:{window}:{client_id(request_from('127.0.0.1'))}"
    assert caches["default"].get(key) is None  # the guest's one question per hour is intact
    assert get_manager().status()["rejected_requests"] == 2


@override_settings(
    GUEST_RATE_LIMIT="1/1h",
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    },
)
async def test_a_cache_that_is_down_lets_guests_through(
    async_client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        assert (await post(async_client, SIMPLE, {"query": "chunks=1"})).status_code == 200
    assert "Rate limit not counted" in caplog.text


def test_the_chat_page_says_why_it_waits_in_english_and_vietnamese() -> None:
    english = ui_strings()
    assert "%(seconds)s" in english["clientLimit"] and "%(seconds)s" in english["rateLimited"]
    with translation.override("vi"):
        vietnamese = ui_strings()
    assert vietnamese["clientLimit"].startswith("Bạn đang có nhiều câu hỏi")
    assert vietnamese["rateLimited"].startswith("Bạn đang hỏi quá thường xuyên")
    assert "%(seconds)s" in vietnamese["rateLimited"]


@pytest.mark.django_db
def test_staff_see_the_clients_that_asked_most_in_the_period(admin_client: Client) -> None:
    def row(client: str, when: datetime, status: str = "completed") -> None:
        GuestRequest.objects.create(
            request_id=uuid.uuid4(), status=status, created_at=when, client_hash=client
        )

    november, october = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    for _ in range(5):
        row("a" * 32, november, "cancelled")
    for _ in range(2):
        row("b" * 32, november)
    for _ in range(9):
        row("c" * 32, october)
    url = "/admin/guest_queue/guestrequest/"
    everything = admin_client.get(url).context["top_clients"]
    assert [(r["client_hash"][0], r["requests"]) for r in everything] == [
        ("c", 9),
        ("a", 5),
        ("b", 2),
    ]
    period = admin_client.get(url, {"created_at__month": 11, "created_at__year": 2026})
    top = period.context["top_clients"]
    assert [(r["client_hash"][0], r["requests"], r["cancelled"]) for r in top] == [
        ("a", 5, 5),
        ("b", 2, 0),
    ]
    assert b"?client_hash=" + b"a" * 32 in period.content
    one = admin_client.get(url, {"client_hash": "a" * 32})
    assert one.status_code == 200 and one.context["cl"].result_count == 5


async def status_without_a_body(client: tuple[str, int]) -> int:
    """POST to the real ASGI app and send no body: only the guard can answer that.

    A refusal carries the same body as the view's: ``error``, ``code``, ``retry_after``."""
    from asgiref.testing import ApplicationCommunicator

    from genestory.asgi import application

    from .test_asgi import chat_scope

    app = ApplicationCommunicator(application, {**chat_scope(b'{"query": "x"}'), "client": client})
    start = await app.receive_output(5)
    if start["status"] == 429:
        body = json.loads((await app.receive_output(5))["body"])
        assert body["code"] == "client_limit" and body["error"]
        headers = dict(start["headers"])
        assert body["retry_after"] == int(headers[b"retry-after"]) >= 1
    await app.wait(2)
    return int(start["status"])


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=1, GUEST_MAX_CONCURRENT_REQUESTS=1)
async def test_a_client_at_its_cap_is_refused_before_django_runs() -> None:
    from guest_queue.asgi.client_guard import REFUSAL_DELAY_SEC

    from .test_asgi import Client as AsgiClient

    held = AsgiClient("sleep=2 chunks=1")
    assert await held.start() == 200
    # No request body is sent: only a refusal from the scope alone can answer.
    started = time.monotonic()
    assert await status_without_a_body(("127.0.0.1", 50001)) == 429
    # A client at its cap gets its refusal late: a flood of them cannot eat the CPU.
    assert time.monotonic() - started >= REFUSAL_DELAY_SEC
    manager = get_manager()
    assert manager.status()["rejected_client_limit"] == 1
    await held.finish()
    # Below the cap again: the request goes on to Django (which waits for the body).
    other = AsgiClient("chunks=1")
    assert await other.start() == 200
    await other.finish()


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=1)
async def test_a_client_whose_request_ends_during_the_refusal_delay_is_let_in() -> None:
    from .test_asgi import Client as AsgiClient

    held = AsgiClient("sleep=0.1 chunks=1")
    assert await held.start() == 200
    finishing = asyncio.create_task(held.finish())
    # At its cap when it arrives, below it before the delay ends: on to Django, which
    # waits for a body that never comes (so no 429 within the delay and a bit).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(status_without_a_body(("127.0.0.1", 50002)), timeout=1.5)
    await finishing
    assert get_manager().status()["rejected_client_limit"] == 0


@override_settings(GUEST_MAX_REQUESTS_PER_CLIENT=1)
async def test_a_request_django_drops_without_closing_is_released_at_once() -> None:
    """Django skips ``response.close()`` when the client leaves during the middleware's
    response phase; the ASGI wrapper releases what the call accepted but never streamed."""
    from guest_queue.asgi import SharedSyncThreads
    from guest_queue.asgi.client_guard import ClientCapGuard
    from guest_queue.runtime.unstarted import note_ticket

    from .test_asgi import chat_scope

    manager = get_manager()

    async def django_dropping_the_response(scope: Any, receive: Any, send: Any) -> None:
        ticket = await manager.submit("chunks=1", client_hint=client_id(request_from("1.2.3.4")))
        note_ticket(manager, ticket)  # what the view does; then the response is dropped

    guard = ClientCapGuard(SharedSyncThreads(django_dropping_the_response))

    async def no_body() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def ignore(message: Any) -> None:
        pass

    for _ in range(3):  # were it leaked, the second would be refused (cap 1)
        await guard({**chat_scope(b""), "client": ("1.2.3.4", 1)}, no_body, ignore)
    status = manager.status()
    assert status["total_requests"] == status["cancelled_requests"] == 3
    assert manager.admission.client_count(client_id(request_from("1.2.3.4"))) == 0


async def test_the_rate_is_counted_in_a_shared_redis_cache(async_client: AsyncClient) -> None:
    redis_url()  # skips (fails in CI) without Redis
    shared = caches["redis"]
    shared.clear()  # the tests' own Redis database number: safe to empty
    try:
        with override_settings(
            GUEST_RATE_LIMIT="2/1h", GUEST_CACHE_ALIAS="redis", GUEST_HISTORY_ENABLED=False
        ):
            try:
                codes = [await post(async_client, SIMPLE, {"query": "chunks=1"}) for _ in range(3)]
                assert [r.status_code for r in codes] == [200, 200, 429]
                window = int(time.time() // 3600)
                key = f"guest_queue:rate:3600:{window}:{client_id(request_from('127.0.0.1'))}"
                # What another process sharing the cache would read: this client's count.
                assert await shared.aget(key) == 3
            finally:
                await get_manager().close()  # and the rate counter's Redis connections
    finally:
        shared.clear()
        # Django's RedisCache keeps its pool open for the process: close its sockets here,
        # not when the garbage collector finds them in some later test.
        for pool in shared._cache._pools.values():  # type: ignore[attr-defined]
            pool.disconnect()
