"""Whether the workflow's service is up: probed at most once per cache period."""

from __future__ import annotations

import asyncio
import logging
import time

from .workflow import Workflow, is_available

logger = logging.getLogger("guest_queue")

PROBE_TIMEOUT_SEC = 5.0


class AvailabilityProbe:
    """Caches ``is_available()`` for ``ttl`` seconds; concurrent callers share one probe."""

    def __init__(self, workflow: Workflow, ttl: float) -> None:
        self.workflow = workflow
        self.ttl = ttl
        self._last: tuple[float, bool] | None = None
        self._probe: asyncio.Future[bool] | None = None

    async def check(self) -> bool:
        """The cached answer, or a fresh probe when it is older than ``ttl``."""
        if self._last is not None and time.monotonic() - self._last[0] < self.ttl:
            return self._last[1]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self._run())
        # Shielded: a caller that goes away must not cancel the probe others wait on.
        return await asyncio.shield(self._probe)

    def mark_down(self) -> None:
        """Remember that the service just failed, so new requests are refused for a while."""
        self._last = (time.monotonic(), False)

    async def _run(self) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SEC):
                up = await is_available(self.workflow)
        except Exception:
            logger.warning("Workflow availability probe failed", exc_info=True)
            up = False
        self._last = (time.monotonic(), up)
        return up
