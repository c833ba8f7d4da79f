"""Single flight across processes, the Redis side: the lists of leaders each process hears."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from guest_queue.core.backends.redis.answers import RedisAnswers

from .conftest import Factory, GateWorkflow, Stream, until
from .test_answer_cache import MemoryCache


class FakeClient:
    def __init__(self) -> None:
        self.published: list[tuple[float, str]] = []
        #: Raised by the next publishes, in turn.
        self.failures: list[Exception] = []

    def register_script(self, script: str) -> None:
        return None

    async def publish(self, channel: str, message: str) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append((time.monotonic(), message))


class FakeLink:
    """Hands ``listen`` the messages it was given, as the channel would."""

    def __init__(self, messages: list[str], renew_every: float = 1.0) -> None:
        self.client = FakeClient()
        self.messages = messages
        self.renew_every = renew_every

    async def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        for message in self.messages:
            heard(message)


def answers(
    lease_sec: float = 10.0, messages: list[str] | None = None, renew_every: float = 1.0
) -> RedisAnswers:
    link: Any = FakeLink(messages or [], renew_every)
    return RedisAnswers(link, "gq", None, "me", lease_sec, [])  # type: ignore[arg-type]


def said(lists: RedisAnswers) -> list[str]:
    client: Any = lists.client
    return [message for _, message in client.published]


async def test_a_process_says_its_list_at_each_change_and_each_renewal_and_idles_quietly() -> None:
    lists = answers(renew_every=0.1)
    runner = asyncio.ensure_future(lists.run())
    try:
        await asyncio.sleep(0.35)
        assert said(lists) == []  # answering nothing, never said anything: nothing to say
        lists.register("q", "L1")
        await until(lambda: len(said(lists)) == 1)
        assert said(lists) == ['s ["me",[["q","L1"]]]']  # at once, not at the next renewal
        await until(lambda: len(said(lists)) >= 3)  # then every renewal, for the others' lease
        assert set(said(lists)) == {'s ["me",[["q","L1"]]]'}
        client: Any = lists.client
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(client.published)]
        assert all(gap >= 0.08 for gap in gaps), gaps
        lists.unregister("q", "L1")
        await until(lambda: said(lists)[-1] == 's ["me",[]]')
        count = len(said(lists))
        await asyncio.sleep(0.35)
        assert len(said(lists)) == count  # the empty list said once, then quiet
        lists.register("q2", "L2")  # still listening after a quiet spell
        await until(lambda: said(lists)[-1] == 's ["me",[["q2","L2"]]]')
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_failed_publish_is_logged_and_said_again_at_the_next_renewal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lists = answers(renew_every=0.1)
    client: Any = lists.client
    client.failures.append(ConnectionError("Redis went away"))
    runner = asyncio.ensure_future(lists.run())
    try:
        with caplog.at_level(logging.INFO, logger="guest_queue"):
            lists.register("q", "L1")
            await until(lambda: said(lists) == ['s ["me",[["q","L1"]]]'])
        messages = [r.getMessage() for r in caplog.records]
        assert "Publishing the questions answered here failed (Redis went away)" in messages
        # Saying "nothing any more" fails too: it is said again, or the others would go on
        # sending this question's followers here until the list lapsed.
        client.failures.append(ConnectionError("Redis went away"))
        lists.unregister("q", "L1")
        await until(lambda: said(lists)[-1] == 's ["me",[]]')
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_question_with_spaces_is_heard_whole_and_wants_reach_the_relay() -> None:
    wanted: list[str] = []
    lists = answers(messages=['s ["P2",[["what is dna","L2"]]]', "w L1"])
    await lists.listen_wants(wanted.append)
    assert lists.leader("what is dna") == "L2"
    assert wanted == ["L1"]


async def test_a_lapsed_list_does_not_hide_another_process_s_leaders() -> None:
    lists = answers(lease_sec=0.05)
    # Private: the handler of a message on the leaders' channel, fed here without Redis.
    lists._heard_list('["P1",[["k1","L1"]]]')
    await asyncio.sleep(0.1)
    lists._heard_list('["P2",[["k2","L2"]]]')
    # P1's list, heard first, has lapsed: P2's leaders are still found (and P1's are not).
    assert lists.leader("k2") == "L2"
    assert lists.leader("k1") is None


def test_an_empty_list_forgets_that_process_s_leaders() -> None:
    lists = answers()
    # Private: the handler of a message on the leaders' channel, fed here without Redis.
    lists._heard_list('["P1",[["k1","L1"]]]')
    lists._heard_list('["P1",[]]')
    assert lists.leader("k1") is None
    assert lists.theirs == {}
    lists._heard_list('["P3",[]]')  # a process never heard of says it answers nothing
    assert lists.theirs == {}


def test_a_malformed_list_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    lists = answers()
    # Private: the handler of a message on the leaders' channel, fed here without Redis.
    lists._heard_list("not json")
    lists._heard_list('["P1",[["k1"]]]')
    assert lists.theirs == {}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == ["Ignoring a malformed message on gq:answers"] * 2


def test_an_older_leader_ending_does_not_unregister_the_newer_one() -> None:
    lists = answers()
    lists.register("q", "L2")
    lists.unregister("q", "L1")
    assert lists.mine == {"q": "L2"}
    lists.unregister("q", "L2")
    assert lists.mine == {}


async def test_a_quiet_answer_is_waited_for_and_a_waiting_request_is_alive(
    shared: Factory,
    gate: GateWorkflow,
) -> None:
    manager = shared(gate, MemoryCache(), max_concurrent=1)
    assert manager.relay is not None
    lists = manager.relay.shared
    assert isinstance(lists, RedisAnswers)
    running = Stream(manager, await manager.submit("one"))
    waiting = Stream(manager, await manager.submit("two"))
    await until(lambda: gate.started == ["one"])
    assert await lists.alive(running.ticket.request_id)
    assert await lists.alive(waiting.ticket.request_id)
    assert not await lists.alive("nobody")
    # Nothing relayed yet: the read waits (up to its block) and finds nothing.
    assert await lists.read("nobody", 0, 0.2) == []
