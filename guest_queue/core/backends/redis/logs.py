"""Resumable requests' logs in Redis Streams, so a resume on any process finds them.

One stream per request (``{prefix}:log:<id>``), entry ids ``<seq>-0``, capped
with ``XADD MAXLEN ~``; its TTL is refreshed on every append and is the resume
grace once the terminal event is in (a small ``logdone`` key then remembers
the id for an hour, so a late resume gets "expired", not "unknown").
Appends are written in order by one background task, pipelined.

Readers claim a request (``{prefix}:attached:<id>`` holds the newest claim's
number, taken from Redis's clock so that it only grows) and announce the claim
on ``{prefix}:readers``: every process closes its older readers of that
request at once. A remote reader renews its claim only while it is still the
newest, so a lost announcement closes it at its next renewal anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ...config import QueueConfig
from ...errors import Unavailable
from ...eventlog import LogTrimmed
from ...events import Event, encode_json
from ...supervise import stay_cancelled
from .link import CLOSE_TIMEOUT_SEC, UNREACHABLE, RedisLink

logger = logging.getLogger("guest_queue")

#: How long the id of a finished, expired log is remembered (to answer 410, not 404).
DONE_MEMORY_SEC = 3600
#: Margin on a live log's TTL beyond the longest the request may still take.
LIVE_TTL_MARGIN_SEC = 60
#: The pending entry's seq that asks the writer to delete a finished log early.
DROP = -1
#: How long the last claim number is kept (numbers only grow while it is).
CLAIM_MEMORY_MS = 86_400_000

#: KEYS: the request's attached key, the queue's last claim number. ARGV: ttl ms, channel,
#: request id, how long the last number is kept (ms). A new claim: a number above every
#: earlier one, announced. Returns it.
CLAIM = """
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local number = math.max(now_us, tonumber(redis.call('GET', KEYS[2]) or '0') + 1)
number = string.format('%.0f', number)
redis.call('SET', KEYS[2], number, 'PX', tonumber(ARGV[4]))
redis.call('SET', KEYS[1], number, 'PX', tonumber(ARGV[1]))
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. number)
return number
"""

#: KEYS: the request's attached key. ARGV: the claim's number, ttl ms.
#: Renews the claim while it is the newest (or lapsed): 1; a newer one holds it: 0.
RENEW = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""

#: KEYS: the request's attached key. ARGV: the claim's number. Gives it up if still held.
UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLogs:
    """The ``SharedLogs`` of a Redis-backed queue."""

    def __init__(self, link: RedisLink, tag: str, config: QueueConfig, timeout_sec: float) -> None:
        self.link = link
        self.client: Redis = link.client
        self.cancels = f"{tag}:cancels"
        self.readers = f"{tag}:readers"
        self._last_claim = f"{tag}:lastclaim"
        self._claim = self.client.register_script(CLAIM)
        self._renew = self.client.register_script(RENEW)
        self._unclaim = self.client.register_script(UNCLAIM)
        # A blocking read must end well within the client's read timeout.
        self.max_block_sec = timeout_sec / 2
        self.tag = tag
        self.max_events = config.resume_log_max_events
        self.grace_ms = max(1, round(config.resume_grace_sec * 1000))
        wait = config.max_queue_wait_sec or 0
        live = config.resume_grace_sec + config.request_timeout_sec + wait + LIVE_TTL_MARGIN_SEC
        self.live_ms = round(live * 1000)
        self._pending: list[tuple[str, int, Event | None]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        #: Whether the writer is sending a batch; whether the last batch failed once.
        self._busy = False
        self._retried = False

    def log_key(self, request_id: str) -> str:
        """The Redis key of the request's log (a stream)."""
        return f"{self.tag}:log:{request_id}"

    def _done_key(self, request_id: str) -> str:
        return f"{self.tag}:logdone:{request_id}"

    def attached_key(self, request_id: str) -> str:
        """The Redis key that says a reader is attached to the request's log."""
        return f"{self.tag}:attached:{request_id}"

    # -- writing (the process driving the request) -------------------------------

    @property
    def flushed(self) -> bool:
        """Whether every append, touch and drop so far has been sent (or given up)."""
        return not self._pending and not self._busy

    def append(self, request_id: str, seq: int, event: Event) -> None:
        """Queue the event for the writer task (started on first use)."""
        self._pending.append((request_id, seq, event))
        self._kick()

    def touch(self, request_id: str) -> None:
        """Refresh a live log's TTL (a guest waiting long without a new event)."""
        self._pending.append((request_id, 0, None))
        self._kick()

    def drop(self, request_id: str) -> None:
        """Delete a finished log early (queued after its events; it reads as expired)."""
        self._pending.append((request_id, DROP, None))
        self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self._busy = True
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for request_id, seq, event in batch:
                        self._queue(pipe, request_id, seq, event)
                    replies = await pipe.execute(raise_on_error=False)
                # redis-py may swallow a cancel that lands as the command is sent: a writer
                # going on would wait for the next batch for ever, and close() with it.
                stay_cancelled()
                _raise_unless_written(replies)
                self._retried = False
            except (RedisError, OSError):
                stay_cancelled()  # Or a cancel that redis-py turned into an error.
                if self._retried:
                    self._retried = False
                    logger.warning("Writing %d resumable event(s) to Redis failed", len(batch))
                else:
                    # Once more, ahead of what came since (an entry id never goes back).
                    self._retried = True
                    self._pending[:0] = batch
                    self._wake.set()
            finally:
                self._busy = False

    def _queue(self, pipe: Any, request_id: str, seq: int, event: Event | None) -> None:
        key = self.log_key(request_id)
        if event is None:
            if seq == DROP:
                pipe.delete(key)
                pipe.set(self._done_key(request_id), 1, ex=DONE_MEMORY_SEC)
            else:
                pipe.pexpire(key, self.live_ms)
            return
        # Strict JSON, like the wire: the runner let no ``NaN`` or object through.
        entry = encode_json({"event": event.name, "data": event.data})
        pipe.xadd(key, {"e": entry}, id=f"{seq}-0", maxlen=self.max_events, approximate=True)
        if event.is_terminal:
            pipe.pexpire(key, self.grace_ms)
            pipe.set(self._done_key(request_id), 1, ex=DONE_MEMORY_SEC)
        else:
            pipe.pexpire(key, self.live_ms)

    async def close(self) -> None:
        """Write what is pending, then stop the writer."""
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_SEC):
                    while not self.flushed and not self._writer.done():
                        self._wake.set()
                        await asyncio.sleep(0.01)
            self._writer.cancel()
            # Bounded: a writer that shrugs off its cancel must not hold the shutdown.
            await asyncio.wait((self._writer,), timeout=CLOSE_TIMEOUT_SEC)
            if self._writer.done() and not self._writer.cancelled():
                self._writer.exception()  # Retrieved: it was stopping anyway.

    # -- reading (any process) ------------------------------------------------------

    async def state(self, request_id: str) -> str | None:
        """``Unavailable`` (a 503 to the guest) when Redis cannot be reached."""
        try:
            exists, done = await asyncio.gather(
                self.client.exists(self.log_key(request_id)),
                self.client.exists(self._done_key(request_id)),
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable(UNREACHABLE, self.link.retry_after) from exc
        if exists:
            return "live"
        return "expired" if done else None

    async def read(self, request_id: str, after: int, block_sec: float) -> list[tuple[int, Event]]:
        key = self.log_key(request_id)
        found = await self.client.xrange(key, min=f"{after + 1}-0", max="+", count=500)
        if not found:
            block_ms = max(1, math.floor(min(block_sec, self.max_block_sec) * 1000))
            reply = await self.client.xread({key: f"{after}-0"}, count=500, block=block_ms)
            found = reply[0][1] if reply else []
        entries = [(int(str(i).split("-")[0]), self._event(f)) for i, f in found]
        if entries and entries[0][0] > after + 1:
            raise LogTrimmed(after)
        if not entries and after > 0:
            first = await self.client.xrange(key, count=1)
            if first and int(str(first[0][0]).split("-")[0]) > after + 1:
                raise LogTrimmed(after)
        return entries

    async def bounds(self, request_id: str) -> tuple[int, int] | None:
        """``Unavailable`` (a 503 to the guest) when Redis cannot be reached."""
        key = self.log_key(request_id)
        try:
            first, last = await asyncio.gather(
                self.client.xrange(key, count=1), self.client.xrevrange(key, count=1)
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable(UNREACHABLE, self.link.retry_after) from exc
        if not first or not last:
            return None
        return int(str(first[0][0]).split("-")[0]), int(str(last[0][0]).split("-")[0])

    @staticmethod
    def _event(fields: dict[Any, Any]) -> Event:
        raw = json.loads(fields["e"])
        return Event(raw["event"], raw["data"])

    async def claim(self, request_id: str, ttl_sec: float) -> int:
        keys = [self.attached_key(request_id), self._last_claim]
        args: list[str | int] = [_ms(ttl_sec), self.readers, request_id, CLAIM_MEMORY_MS]
        return int(await self._claim(keys=keys, args=args))

    async def renew(self, request_id: str, number: int, ttl_sec: float) -> bool:
        keys = [self.attached_key(request_id)]
        return bool(await self._renew(keys=keys, args=[number, _ms(ttl_sec)]))

    async def unclaim(self, request_id: str, number: int) -> None:
        await self._unclaim(keys=[self.attached_key(request_id)], args=[number])

    async def newest_claim(self, request_id: str) -> int:
        return int(await self.client.get(self.attached_key(request_id)) or 0)

    async def attached(self, request_id: str) -> bool:
        return bool(await self.client.exists(self.attached_key(request_id)))

    async def cancel(self, request_id: str) -> None:
        """``Unavailable`` (a 503 to the guest) when Redis cannot be reached."""
        try:
            await self.client.publish(self.cancels, request_id)
        except (RedisError, OSError, TimeoutError) as exc:
            raise Unavailable(UNREACHABLE, self.link.retry_after) from exc

    async def listen(
        self, on_cancel: Callable[[str], None], on_claim: Callable[[str, int], None]
    ) -> None:
        def cancel_heard(message: str) -> None:
            if message:  # "" only says the subscription was (re)made
                on_cancel(message)

        def claim_heard(message: str) -> None:
            request_id, _, number = message.partition(" ")
            if not message:
                on_claim("", 0)  # Announcements may have been missed: check the claims.
            elif number.isdigit():
                on_claim(request_id, int(number))

        await self.link.listen_all({self.cancels: cancel_heard, self.readers: claim_heard})


def _raise_unless_written(replies: list[Any]) -> None:
    """Raise a batch's first error; an XADD refused because its entry is already there is
    none (a batch sent again after its reply was lost: nothing is written twice)."""
    for reply in replies:
        if isinstance(reply, ResponseError) and "equal or smaller" in str(reply):
            continue
        if isinstance(reply, Exception):
            raise reply


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
