"""Single flight across processes: who answers which question now, and the relayed answers.

``{prefix}:inflight:<question key>`` holds the request id of the leader
answering that question (``SET NX`` with a lease's TTL, renewed each third of
the lease while it runs, deleted when it ends: a dead process's entries
expire). A process asked the same question publishes the leader's id on
``{prefix}:follow``; the leader's process then relays the answer into a
Redis Stream (``{prefix}:log:answer:<leader id>``, written and read by
``RedisLogs`` like a resumable request's log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from ...events import Event
from ...supervise import stay_cancelled
from .link import RedisLink
from .logs import RedisLogs
from .scripts import LOCATE

logger = logging.getLogger("guest_queue")

#: Deletes, or extends, a key only while it still names this leader.
FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
RENEW = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return 0
"""


class RedisAnswers:
    """The ``SharedAnswers`` of a Redis-backed queue."""

    def __init__(
        self, link: RedisLink, tag: str, logs: RedisLogs, lease_ms: int, line: list[str]
    ) -> None:
        self.link = link
        self.client = link.client
        self.tag = tag
        self.logs = logs
        self.lease_ms = lease_ms
        self.channel = f"{tag}:follow"
        #: The waiting set and the active set: where a live request is.
        self.line = line
        self._forget = self.client.register_script(FORGET)
        self._renew = self.client.register_script(RENEW)
        self._locate = self.client.register_script(LOCATE)
        #: This process's leaders: question key → request id.
        self.mine: dict[str, str] = {}
        self._pending: list[tuple[str, str, bool]] = []
        self._wake = asyncio.Event()

    def _key(self, key: str) -> str:
        return f"{self.tag}:inflight:{key}"

    @staticmethod
    def _log_id(leader_id: str) -> str:
        return f"answer:{leader_id}"

    async def leader(self, key: str) -> str | None:
        self.link.refuse_if_quiet()
        found = await self.client.get(self._key(key))
        return str(found) if found is not None else None

    def register(self, key: str, leader_id: str) -> None:
        self.mine[key] = leader_id
        self._pending.append((key, leader_id, True))
        self._wake.set()

    def unregister(self, key: str, leader_id: str) -> None:
        if self.mine.get(key) == leader_id:
            del self.mine[key]
        self._pending.append((key, leader_id, False))
        self._wake.set()

    async def want(self, leader_id: str) -> None:
        await self.client.publish(self.channel, leader_id)

    async def listen_wants(self, on_want: Callable[[str], None]) -> None:
        def heard(message: str) -> None:
            if message:  # "" only says the subscription was (re)made
                on_want(message)

        await self.link.listen(self.channel, heard)

    def append(self, leader_id: str, seq: int, event: Event) -> None:
        self.logs.append(self._log_id(leader_id), seq, event)

    async def read(self, leader_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        return await self.logs.read(self._log_id(leader_id), after, block_sec)

    async def alive(self, leader_id: str) -> bool:
        found = await self._locate(keys=self.line, args=[leader_id])
        return bool(found[0])

    async def run(self) -> None:
        """Send registrations as they come (pipelined); renew this process's each third of
        the lease."""
        every = self.link.renew_every
        renew_at = time.monotonic() + every
        while True:
            try:
                async with asyncio.timeout(max(0.0, renew_at - time.monotonic())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            batch, self._pending = self._pending, []
            renew = time.monotonic() >= renew_at
            if renew:
                renew_at = time.monotonic() + every
            try:
                await self._send(batch, renew)
            except (RedisError, OSError) as exc:
                # Not retried: a registration missed costs a duplicate answer, no more, and a
                # key left behind expires with its lease.
                logger.warning("Sharing answers through Redis failed (%s)", exc)
            finally:
                stay_cancelled()  # redis-py may have swallowed a cancel

    async def _send(self, batch: list[tuple[str, str, bool]], renew: bool) -> None:
        if not batch and not (renew and self.mine):
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key, leader_id, starting in batch:
                if starting:
                    pipe.set(self._key(key), leader_id, nx=True, px=self.lease_ms)
                else:
                    await self._forget(keys=[self._key(key)], args=[leader_id], client=pipe)
            if renew and self.mine:
                keys = [self._key(k) for k in self.mine]
                await self._renew(keys=keys, args=[self.lease_ms, *self.mine.values()], client=pipe)
            await pipe.execute()
