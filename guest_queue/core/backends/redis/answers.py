"""Single flight across processes: who answers which question now, and the relayed answers.

Every process publishes, on ``{prefix}:answers``, the questions it is
answering now (``s`` messages: its process id and its ``[question key,
request id]`` pairs, whole, at each change and each third of the lease) and
keeps the others' lists in memory, each list forgotten a lease after it was
last heard: finding who answers a question costs no round trip, and a dead
process's questions are forgotten within a lease. A process asked the same
question publishes ``w <leader id>`` on the same channel; the leader's
process then relays the answer into a Redis Stream
(``{prefix}:log:answer:<leader id>``, written and read by ``RedisLogs`` like
a resumable request's log).
"""

from __future__ import annotations

import asyncio
import json
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


class RedisAnswers:
    """The ``SharedAnswers`` of a Redis-backed queue."""

    def __init__(
        self,
        link: RedisLink,
        tag: str,
        logs: RedisLogs,
        process_id: str,
        lease_sec: float,
        line: list[str],
    ) -> None:
        self.link = link
        self.client = link.client
        self.logs = logs
        self.process_id = process_id
        self.lease_sec = lease_sec
        self.channel = f"{tag}:answers"
        #: The waiting set and the active set: where a live request is.
        self.line = line
        self._locate = self.client.register_script(LOCATE)
        #: This process's leaders: question key → request id.
        self.mine: dict[str, str] = {}
        #: The other processes' leaders, and when each process's list lapses.
        self.theirs: dict[str, dict[str, str]] = {}
        self._lapses: dict[str, float] = {}
        self._changed = asyncio.Event()

    @staticmethod
    def _log_id(leader_id: str) -> str:
        return f"answer:{leader_id}"

    def leader(self, key: str) -> str | None:
        now = time.monotonic()
        for process, leaders in list(self.theirs.items()):
            if self._lapses[process] < now:
                del self.theirs[process], self._lapses[process]
                continue
            found = leaders.get(key)
            if found is not None:
                return found
        return None

    def register(self, key: str, leader_id: str) -> None:
        self.mine[key] = leader_id
        self._changed.set()

    def unregister(self, key: str, leader_id: str) -> None:
        if self.mine.get(key) == leader_id:
            del self.mine[key]
            self._changed.set()

    async def want(self, leader_id: str) -> None:
        await self.client.publish(self.channel, f"w {leader_id}")

    async def listen_wants(self, on_want: Callable[[str], None]) -> None:
        def heard(message: str) -> None:
            kind, _, body = message.partition(" ")
            if kind == "w":
                on_want(body)
            elif kind == "s":
                self._heard_list(body)

        await self.link.listen(self.channel, heard)

    def _heard_list(self, body: str) -> None:
        try:
            process, pairs = json.loads(body)
            leaders = {str(key): str(leader_id) for key, leader_id in pairs}
        except (ValueError, TypeError):
            logger.warning("Ignoring a malformed message on %s", self.channel)
            return
        if process == self.process_id:
            return
        if leaders:
            self.theirs[process] = leaders
            self._lapses[process] = time.monotonic() + self.lease_sec
        else:
            self.theirs.pop(process, None)
            self._lapses.pop(process, None)

    def append(self, leader_id: str, seq: int, event: Event) -> None:
        self.logs.append(self._log_id(leader_id), seq, event)

    async def read(self, leader_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        return await self.logs.read(self._log_id(leader_id), after, block_sec)

    async def alive(self, leader_id: str) -> bool:
        found = await self._locate(keys=self.line, args=[leader_id])
        return bool(found[0])

    async def run(self) -> None:
        """Publish this process's list at each change, and each third of the lease."""
        every = self.link.renew_every
        said_empty = True
        while True:
            try:
                async with asyncio.timeout(every):
                    await self._changed.wait()
            except TimeoutError:
                if not self.mine and said_empty:
                    continue
            self._changed.clear()
            pairs = list(self.mine.items())
            message = "s " + json.dumps([self.process_id, pairs], separators=(",", ":"))
            try:
                await self.client.publish(self.channel, message)
                said_empty = not pairs
            except (RedisError, OSError) as exc:
                # The next change or renewal says it again; meanwhile a duplicate question
                # elsewhere is answered on its own, as without sharing.
                logger.info("Publishing the questions answered here failed (%s)", exc)
            finally:
                stay_cancelled()  # redis-py may have swallowed a cancel
