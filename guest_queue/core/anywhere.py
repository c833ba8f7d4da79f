"""A request wherever it is held: resumed, cancelled or looked for in this process or in
any other sharing the queue (a resumable request may be driven here, driven by another
process, or left by a draining one to be adopted)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

from .backends.base import Admission
from .errors import NotAccepting, Unavailable
from .eventlog import LogTrimmed
from .handoff import HandOff
from .live import LiveTickets
from .records import Status
from .reporting import QueueReporter
from .resume import LogExpired, NotSentYet, Resumes, UnknownRequest
from .stopping import QueueStopper

UNREACHABLE_QUEUE = "The queue service is unreachable; please try again shortly."

#: Ends a request this process holds on purpose (``QueueManager.cancel``).
Cancel = Callable[[str], Status | None]


class RequestsAnywhere:
    """Resume, cancel and find requests across the processes sharing the queue."""

    def __init__(
        self,
        resumes: Resumes,
        admission: Admission,
        live: LiveTickets,
        reporter: QueueReporter,
        stopper: QueueStopper,
        handoff: HandOff,
        cancel: Cancel,
    ) -> None:
        self.resumes = resumes
        self.admission = admission
        self.live = live
        self.reporter = reporter
        self.stopper = stopper
        self.handoff = handoff
        self.cancel = cancel

    async def resume(self, request_id: str, after: int) -> AsyncIterator[bytes]:
        """A resumable request's messages after seq ``after``, then live ones (SSE with ids).

        Checked before anything is sent: ``UnknownRequest`` (never seen, or not
        resumable), ``LogExpired`` (its log is gone), ``NotSentYet`` (``after`` is
        beyond its last message), ``LogTrimmed`` (the messages after ``after`` are no
        longer kept), ``NotAccepting`` (draining, and the request is not held here:
        resume through another process).
        """
        try:
            res = self.resumes.get(request_id)
        except KeyError:
            return await self._resume_elsewhere(request_id, after)
        if after > res.log.last_seq:
            raise NotSentYet(after)
        res.log.read_after(after)  # LogTrimmed when they are gone
        return self.resumes.read(res, after, with_ids=True)

    async def _resume_elsewhere(self, request_id: str, after: int) -> AsyncIterator[bytes]:
        shared = self.resumes.shared
        state = await shared.state(request_id) if shared is not None else None
        if shared is None or state is None:
            raise UnknownRequest(request_id)
        if state != "live":
            raise LogExpired(request_id)
        bounds = await shared.bounds(request_id)
        if bounds is not None:
            # The same checks as for a log this process holds.
            first, last = bounds
            if after > last:
                raise NotSentYet(after)
            if after + 1 < first:
                raise LogTrimmed(after)
        if not self.stopper.accepting:
            raise NotAccepting("The server is restarting; resume again.", 1)
        adopted = await self.handoff.adopt(request_id)
        if adopted is not None:
            # Its process was drained for a deploy: this one drives it now, same place.
            return self.resumes.read(adopted, after, with_ids=True)
        # Another process drives it: read its log from the shared queue's Redis.
        return self.resumes.read_remote(
            request_id,
            after,
            with_ids=True,
            alive=functools.partial(self.held_anywhere, request_id),
        )

    async def held_anywhere(self, request_id: str) -> bool:
        """Whether the request waits or runs in some process (True when that cannot be told)."""
        if self.live.get(request_id) is not None:
            return True
        try:
            if await self.admission.locate(request_id) is not None:
                return True
            return not await self.admission.reachable()
        except Exception:
            return True

    async def cancel_anywhere(self, request_id: str) -> Status | None:
        """``cancel``, also for a request another process sharing the queue holds."""
        status = self.cancel(request_id)
        shared = self.resumes.shared
        if status is not None or shared is None:
            return status
        found = await self.reporter.find(request_id)
        if found is None:
            if not await self.admission.reachable():
                # Not "unknown": the shared queue could not be asked.
                raise Unavailable(UNREACHABLE_QUEUE, 1)
            return None
        if found.get("status") in ("queued", "processing"):
            await shared.cancel(request_id)
            return Status.CANCELLED
        return Status(found["status"])

    def cancel_heard(self, request_id: str) -> None:
        """Another process asked for the request's cancel: cancel it if this one holds it."""
        if self.live.get(request_id) is not None:
            self.cancel(request_id)
