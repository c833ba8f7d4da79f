"""The Redis backend's option checks, and the log lookups a resume or a cancel makes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guest_queue.core.backends.redis.link import UNREACHABLE, RedisLink, RedisOptions
from guest_queue.core.backends.redis.logs import RedisLogs
from guest_queue.core.config import ConfigProblem, QueueConfig
from guest_queue.core.errors import Unavailable
from guest_queue.core.events import Event

from ..services import closed_port


def test_a_good_redis_configuration_has_no_problems() -> None:
    for url in ("redis://h:6379/0", "rediss://h/1", "unix:///run/redis.sock"):
        assert RedisOptions.problems({"url": url, "lease_sec": 5, "timeout_sec": 1}) == []
    assert RedisOptions.problems({"url": "redis://h"}) == []  # the defaults: 5 s and 1 s


def test_a_missing_or_foreign_url_is_reported_with_its_value() -> None:
    hint = "The Redis backend needs the Redis that every process shares."
    cases: tuple[tuple[dict[str, object], str], ...] = (
        ({}, "''"),
        ({"url": "http://h"}, "'http://h'"),
        ({"url": 6379}, "6379"),
    )
    for options, shown in cases:
        assert RedisOptions.problems(options) == [
            ConfigProblem(
                "E033",
                "GUEST_QUEUE_BACKEND's OPTIONS['url'] must be a redis://, rediss:// or "
                f"unix:// URL, not {shown}.",
                hint,
            )
        ]


@pytest.mark.parametrize(("lease", "timeout"), [(3, 1), (3.0, 1.5), (0.3, 0.1), (5, 5)])
def test_a_command_timeout_of_a_third_of_the_lease_or_more_is_an_error(
    lease: float, timeout: float
) -> None:
    options = {"url": "redis://h", "lease_sec": lease, "timeout_sec": timeout}
    problems = RedisOptions.problems(options)
    assert problems == [
        ConfigProblem(
            "E037",
            f"GUEST_QUEUE_BACKEND's OPTIONS['timeout_sec'] ({timeout:g}) must be shorter "
            f"than a third of OPTIONS['lease_sec'] ({lease:g}).",
            "Leases are renewed every third of the lease; a slower command loses them.",
        )
    ]


@pytest.mark.parametrize(
    ("lease", "timeout"), [(3.01, 1), (5, 0), ("5", 9), (5, "x"), (True, 9), (5, None), (-1, 9)]
)
def test_the_lease_rule_leaves_bad_types_and_signs_to_the_settings_checks(
    lease: object, timeout: object
) -> None:
    # Each value's own type and range are checked by the settings (E035, E036).
    options = {"url": "redis://h", "lease_sec": lease, "timeout_sec": timeout}
    assert RedisOptions.problems(options) == []


@pytest.fixture
async def logs(redis_test_url: str, redis_test_prefix: str) -> AsyncIterator[RedisLogs]:
    link = RedisLink(RedisOptions(url=redis_test_url, prefix=redis_test_prefix, lease_sec=1.2))
    config = QueueConfig(resume_grace_sec=2, request_timeout_sec=10)
    made = RedisLogs(link, "{" + redis_test_prefix + "}", config, timeout_sec=0.25)
    yield made
    await made.close()
    await link.aclose()


def chunk(text: str) -> Event:
    return Event("answer_chunk", text)


async def test_bounds_are_the_first_and_last_seq_of_a_log(logs: RedisLogs) -> None:
    assert await logs.bounds("nobody") is None
    assert await logs.state("nobody") is None
    for seq in (1, 2, 3):
        logs.append("r1", seq, chunk(str(seq)))
    await until_bounds(logs, "r1", (1, 3))
    logs.append("r1", 4, Event("workflow_complete", {}))
    await until_bounds(logs, "r1", (1, 4))


async def until_bounds(logs: RedisLogs, rid: str, want: tuple[int, int]) -> None:
    found: list[tuple[int, int] | None] = []

    async def check() -> bool:
        found.append(await logs.bounds(rid))
        return found[-1] == want

    for _ in range(200):
        if await check():
            return
    raise AssertionError(f"bounds {found[-1]} != {want}")


async def test_a_live_log_lives_its_longest_possible_life_and_a_finished_one_the_grace(
    logs: RedisLogs,
) -> None:
    logs.append("r2", 1, chunk("a"))
    await until_bounds(logs, "r2", (1, 1))
    key = logs.log_key("r2")
    # grace 2 + timeout 10 + no wait limit + 60 s of margin
    assert 71_000 < await logs.client.pttl(key) <= 72_000
    await logs.client.pexpire(key, 5_000)
    logs.touch("r2")  # a guest still waiting, with nothing new to say
    for _ in range(200):
        if await logs.client.pttl(key) > 71_000:
            break
    else:
        raise AssertionError("touch() did not refresh the log's TTL")
    logs.append("r2", 2, Event("workflow_complete", {}))
    await until_bounds(logs, "r2", (1, 2))
    assert 1_000 < await logs.client.pttl(key) <= 2_000
    assert await logs.state("r2") == "live"


async def test_lookups_and_cancels_say_unavailable_when_redis_is_down() -> None:
    link = RedisLink(RedisOptions(url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=2.5))
    logs = RedisLogs(link, "{down}", QueueConfig(), timeout_sec=0.25)
    try:
        for lookup in (logs.bounds("r"), logs.state("r"), logs.cancel("r")):
            with pytest.raises(Unavailable) as refused:
                await lookup
            assert refused.value.retry_after == 3 and str(refused.value) == UNREACHABLE
    finally:
        await link.aclose()


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = RedisLink(RedisOptions(url=f"redis://127.0.0.1:{closed_port()}/0", lease_sec=2.5))
    replies: list[Any] = ["ok", OSError("refused"), OSError("refused"), "ok", "ok"]

    async def script(keys: list[str], args: list[Any]) -> Any:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    with caplog.at_level(logging.WARNING, logger="guest_queue"):
        assert await link.run(script, [], []) == "ok"  # a healthy start says nothing
        for _ in range(2):
            with pytest.raises(Unavailable):
                await link.run(script, [], [])
        assert await link.run(script, [], []) == "ok"
        assert await link.run(script, [], []) == "ok"
    assert [r.getMessage() for r in caplog.records] == [
        "Redis queue unreachable (refused); refusing new requests",
        "Redis queue reachable again",
    ]
    await link.aclose()
