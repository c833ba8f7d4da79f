"""One limit in use for every process sharing the queue, adapted from all their answers.

Every process pushes its samples (each answer's time to first chunk, tagged with
the limit's version it was admitted under) and the upstream's busy signals to a
Redis list, about once a second (``LIMITER``). One process at a time holds the
limiter's lease (taken when free, renewed by each pass, given back on close); it
pops every process's samples, runs the controller and writes the limit into the
queue's ``meta`` hash (``SET_LIMIT``), where every admission script reads it. The
others read it back on each pass, to show it and to tag their samples.

Why a lease and one controller rather than each process adapting its share: the
upstream's knee is one number for the whole site, the samples of all processes
together decide sooner, and a limit read inside the admission scripts is exact
at every admission (a share per process would have to be rebalanced as
processes come and go). A busy signal reaches the controller within a pass (at
most a second); answers already admitted run on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...concurrency import LimitController
from ...config import QueueConfig
from ...errors import Unavailable
from ...supervise import stay_cancelled
from ..base import limiter_for, log_change
from .scripts import LIMITER, RELEASE, SET_LIMIT

if TYPE_CHECKING:
    from .link import RedisLink

logger = logging.getLogger("guest_queue")

#: Samples a process keeps while Redis cannot be reached, at most (the newest).
MAX_PENDING = 1000
#: How often each process runs the limiter's pass, at most.
PASS_SEC = 1.0


class SharedLimit:
    """This process's part in the queue's one limit: its samples out, the limit in."""

    def __init__(
        self,
        link: RedisLink,
        config: QueueConfig,
        process_id: str,
        lease_ms: int,
        queue_keys: list[str],
        channel: str,
        limiter: LimitController,
    ) -> None:
        self.link = link
        self.config = config
        self.process_id = process_id
        self.lease_ms = lease_ms
        self.queue_keys = queue_keys
        self.channel = channel
        tag = queue_keys[0].rsplit(":", 1)[0]
        self.lease_key = f"{tag}:limiter"
        self.samples_key = f"{tag}:limit_samples"
        client = link.client
        self._pass = client.register_script(LIMITER)
        self._set = client.register_script(SET_LIMIT)
        self._release = client.register_script(RELEASE)
        #: The controller; only the lease holder's decides.
        self.limiter = limiter
        self.leading = False
        #: The limit in use and its version, as last read from Redis.
        self.limit = limiter.limit
        self.version = 0
        self._pending: list[str] = []
        self._soon = asyncio.Event()
        self.every = min(PASS_SEC, link.renew_every)

    @property
    def adaptive(self) -> bool:
        return self.config.adaptive

    def wants_samples(self) -> bool:
        """Whether answers' speed matters now: adaptive, or a fixed limit shrunk for a while."""
        return self.adaptive or self.limit < self.config.max_concurrent

    def sample(self, version: int, ttfc_sec: float) -> None:
        if math.isfinite(ttfc_sec):
            self._push(f"{version} {ttfc_sec:.6f}")

    def busy(self, retry_after_sec: float) -> None:
        retry = retry_after_sec if math.isfinite(retry_after_sec) else 0.0
        self._push(f"b {max(0.0, retry):.3f}")
        self._soon.set()

    def _push(self, item: str) -> None:
        pending = self._pending
        pending.append(item)
        if len(pending) > MAX_PENDING:
            del pending[: len(pending) - MAX_PENDING]

    async def run(self, on_limit: Callable[[int], None]) -> None:
        """A pass about once a second (at once after a busy signal), until cancelled."""
        while True:
            try:
                async with asyncio.timeout(self.every):
                    await self._soon.wait()
            except TimeoutError:
                pass
            self._soon.clear()
            try:
                await self.run_pass()
            except Unavailable:
                pass  # The samples are kept; the next pass tries again.
            finally:
                stay_cancelled()  # redis-py may have swallowed a cancel
            on_limit(self.limit)

    async def run_pass(self) -> None:
        """Push this process's samples; as the lease holder, decide and write the limit."""
        items, self._pending = self._pending, []
        keys = [self.queue_keys[3], self.samples_key, self.lease_key, *self.queue_keys[:2]]
        try:
            reply = await self.link.run(self._pass, keys, [self.process_id, self.lease_ms, *items])
        except Unavailable:
            self._pending[:0] = items
            raise
        leading, popped, limit, version, queued, active = reply
        written = int(limit) if limit else None
        self.version = int(version)
        if not leading:
            self.leading = False
            self.limit = written if written is not None else self.limiter.limit
            return
        if not self.leading:
            self._take_over(written, self.version)
        limiter = self.limiter
        for item in popped:
            first, _, value = item.partition(" ")
            if first == "b":
                change = limiter.busy(float(value))
                if change is not None:
                    log_change(change, limiter.mode)
            else:
                limiter.observe(int(first), float(value))
        saturated = int(queued) > 0 or int(active) >= limiter.limit
        change = limiter.decide(saturated) or limiter.recover()
        if change is not None:
            log_change(change, limiter.mode)
        if limiter.limit != written or limiter.version != self.version:
            await self._write(limiter.limit, limiter.version)

    def _take_over(self, written: int | None, version: int) -> None:
        """This process now holds the lease: its controller starts where the last one was."""
        self.leading = True
        fresh = limiter_for(self.config)
        start = fresh.limit if written is None else max(1, min(written, fresh.ceiling))
        if not self.adaptive and written is None:
            start = fresh.ceiling
        limiter = LimitController(
            fresh.floor, fresh.ceiling, auto=fresh.auto, initial=start, clock=fresh.clock
        )
        limiter.version = version
        self.limiter = limiter
        logger.info("This process now adapts the shared queue's concurrency limit (%d)", start)

    async def _write(self, limit: int, version: int) -> None:
        keys = [*self.queue_keys, self.lease_key]
        args = [self.lease_ms, limit, version, self.channel, self.process_id]
        if await self.link.run(self._set, keys, args):
            self.limit, self.version = limit, version
        else:
            self.leading = False

    async def close(self) -> None:
        """Give the lease back, so that another process takes the controller over at once."""
        if self.leading:
            self.leading = False
            await self._release(keys=[self.lease_key], args=[self.process_id])
