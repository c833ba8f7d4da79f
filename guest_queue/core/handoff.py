"""Hand-offs at a drain (shared queue): a draining process leaves its waiting resumable
requests' places to the other processes; one of them adopts each when its guest resumes
there, and one that nobody adopts in time ends where it is claimed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .answers.sharing import AnswerSharing
from .backends.base import Admission, Ticket
from .config import QueueConfig
from .drive import StopReason
from .endings import Ending
from .live import LiveTickets
from .records import Status
from .resume import Resumable, Resumes
from .stats import QueueStats
from .stopping import QueueStopper
from .stream import DISCONNECTED

logger = logging.getLogger("guest_queue")

#: How soon a client whose stream a draining process closed should resume it.
HAND_OFF_RETRY_MS = 250
ABANDONED_MESSAGE = "Nobody came back for the request after the server restarted."

#: Ends a request (``QueueManager.finish``).
Finish = Callable[[Ticket, Ending], None]


class HandOff:
    """Leaving waiting requests to the other processes at a drain, and adopting theirs."""

    def __init__(
        self,
        config: QueueConfig,
        admission: Admission,
        resumes: Resumes,
        sharing: AnswerSharing | None,
        live: LiveTickets,
        stats: QueueStats,
        stopper: QueueStopper,
        finish: Finish,
    ) -> None:
        self.config = config
        self.admission = admission
        self.resumes = resumes
        self.sharing = sharing
        self.live = live
        self.stats = stats
        self.stopper = stopper
        self.finish = finish

    async def hand_off(self) -> None:
        """Draining: leave waiting resumable requests' places to the other processes."""
        if self.resumes.shared is None:
            return
        # A process on its way out records no hand-offs (its figures leave with it).
        self.admission.on_abandoned = None
        waiting = [
            t
            for t in self.admission.waiting.values()
            if t.request_id in self.resumes.by_id and not t.record.status.is_terminal
        ]
        followers = self._waiting_followers()
        if not waiting and not followers:
            return
        grace = self.config.resume_grace_sec
        handed = await self.admission.hand_off(waiting, grace, followers)
        for ticket in handed:
            if ticket.share.leader is not None and self.sharing is not None:
                self.sharing.finished(ticket)  # It follows no more: it waits in line itself.
            ticket.drive.stop = StopReason.HANDED_OFF
            self.live.remove(ticket)
            # The adopting process counts it (and records its ending): not counted twice.
            self.stats.total -= 1
            self.resumes.hand_off(ticket.request_id, HAND_OFF_RETRY_MS)
        if handed:
            logger.info("%d waiting request(s) left to the other processes", len(handed))

    def _waiting_followers(self) -> list[tuple[Ticket, str]]:
        """Resumable followers of a leader still waiting in line, with their arrival score.

        A follower had no place of its own: it lines up where it arrived, its leader's
        score (Redis's clock) plus the time it came after that score was given (this
        process's clock; at least just behind its leader).
        """
        followers = []
        for res in self.resumes.by_id.values():
            ticket = res.ticket
            leader = ticket.share.leader
            if leader is None or leader.place.admitted or ticket.record.status.is_terminal:
                continue
            line = self.admission.line_score(leader)
            if line is None:
                continue
            leader_score, scored = line
            after = ticket.record.created_mono - (scored or leader.record.created_mono)
            score = int(float(leader_score)) + max(1, round(after * 1_000_000))
            followers.append((ticket, str(score)))
        return followers

    async def adopt(self, request_id: str) -> Resumable | None:
        """Drive a resumable request a draining process handed off; None if there is none."""
        shared = self.resumes.shared
        if shared is None or not self.stopper.accepting:
            return None
        ticket = await self.admission.adopt(request_id)
        if ticket is None:
            return None
        try:
            earlier = await shared.read(request_id, 0, 0.001)
        except Exception:
            earlier = []
        ticket.record.arrival_position = max(ticket.position, 1)
        self.live.add(ticket, detached=False)
        self.stats.total += 1
        return self.resumes.open(ticket, earlier)

    def abandoned(self, ticket: Ticket) -> None:
        """A hand-off nobody adopted in time, claimed by this process: it ends here, counted
        and recorded once (its own process no longer counts it), as a guest who never came
        back."""
        self.stats.total += 1
        self.finish(ticket, Ending.silent(Status.CANCELLED, DISCONNECTED, ABANDONED_MESSAGE))
