"""Single flight across processes: followers here stream a leader's answer from another process.

A leader whose workflow has run a moment (``ANNOUNCE_AFTER_SEC``) is
announced to the other processes sharing the queue. A request for the same
question reaching another process, where nobody answers it, follows a
``RemoteLeader`` standing in for that leader: one task
per question and process asks the leader's process to relay the answer and
reads it as it is produced, feeding the stand-in exactly as a local leader
feeds its followers (they take no slot and no place in line). The leader's
process relays its answer — the chunks so far at once, then each new batch —
and its ending; the followers then end as a local leader's do (a completed
answer is theirs, a failure sends them back in line on their own). A leader
whose process dies is noticed by its answer going quiet while the request is
in no process's line or slots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .. import events as ev
from ..backends.base import Ticket
from ..endings import Ending
from ..eventlog import LogTrimmed
from ..records import Status
from ..supervise import stay_cancelled
from .remote import SharedAnswers
from .sharing import AnswerSharing, RemoteLeader

logger = logging.getLogger("guest_queue")

#: A leader is announced to the other processes once its workflow has run this long: a
#: quick answer (a fast workflow, a short one) costs the shared queue nothing.
ANNOUNCE_AFTER_SEC = 0.1
#: A quiet relayed answer's leader is looked for this often.
QUIET_CHECK_SEC = 1.0
#: Its leader is taken for dead once found nowhere this many times in a row.
DEAD_AFTER_MISSES = 2
#: The reader gives up after this many failed reads in a row.
READ_FAILURES = 3
#: A leader's relay wakes at least this often even when nothing moves.
PUBLISH_WAKE_SEC = 5.0

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]
#: Settles the followers a leader that did not complete leaves behind (``QueueManager``).
FallBack = Callable[[list[Ticket], Ending], None]


class AnswerRelay:
    """This process's side of single flight across processes."""

    def __init__(
        self,
        sharing: AnswerSharing,
        shared: SharedAnswers,
        spawn: Spawn,
        fall_back: FallBack,
        is_local: Callable[[str], bool],
    ) -> None:
        self.sharing = sharing
        self.shared = shared
        self._spawn = spawn
        self._fall_back = fall_back
        self._is_local = is_local
        #: This process's leaders running their workflow, by request id.
        self.leading: dict[str, Ticket] = {}
        #: Leaders whose answer other processes follow: relayed to them as it is produced.
        self.relaying: set[str] = set()
        #: Those not yet announced to the other processes (they have not run long).
        self._announcing: dict[str, asyncio.TimerHandle] = {}

    async def run(self) -> None:
        """Keep registrations alive and relay the answers other processes ask for."""
        await asyncio.gather(self.shared.run(), self.shared.listen_wants(self._wanted))

    # -- the leader's process -------------------------------------------------------

    def started(self, ticket: Ticket) -> None:
        """A leader starts its workflow: other processes may follow it once it runs a while."""
        key = ticket.share.cache_key
        if key is None or self.sharing.inflight.get(key) is not ticket:
            return
        if ticket.request_id in self.leading:
            return  # Started again after its upstream was busy: announced once.
        loop = asyncio.get_running_loop()
        self.leading[ticket.request_id] = ticket
        self._announcing[ticket.request_id] = loop.call_later(
            ANNOUNCE_AFTER_SEC, self._announce, ticket
        )

    def _announce(self, ticket: Ticket) -> None:
        self._announcing.pop(ticket.request_id, None)
        key = ticket.share.cache_key
        if key is not None and not ticket.record.status.is_terminal:
            self.shared.register(key, ticket.request_id)

    def ended(self, ticket: Ticket, ending: Ending | None = None) -> None:
        """A request ended: if it led, its question is no longer answered here."""
        key = ticket.share.cache_key
        if self.leading.pop(ticket.request_id, None) is None or key is None:
            return
        timer = self._announcing.pop(ticket.request_id, None)
        if timer is not None:
            timer.cancel()  # Over before anyone was told: nothing to take back.
        else:
            self.shared.unregister(key, ticket.request_id)

    def _wanted(self, leader_id: str) -> None:
        leader = self.leading.get(leader_id)
        if leader is None or leader_id in self.relaying or leader.record.status.is_terminal:
            return
        self.relaying.add(leader_id)
        self._spawn(self._relaying(leader))

    def relays(self, ticket: Ticket) -> bool:
        """Whether other processes follow the ticket's answer (it is relayed to them)."""
        return ticket.request_id in self.relaying

    async def _relaying(self, leader: Ticket) -> None:
        try:
            await self._relay(leader)
        finally:
            self.relaying.discard(leader.request_id)

    async def _relay(self, leader: Ticket) -> None:
        """Relay the leader's answer as it is produced, then how it ended."""
        shared, leader_id, share = self.shared, leader.request_id, leader.share
        sent = seq = 0
        while True:
            parts = share.answer_parts or []
            if len(parts) > sent:
                seq += 1
                shared.append(leader_id, seq, ev.Event(ev.ANSWER_CHUNK, "".join(parts[sent:])))
                sent = len(parts)
            if leader.record.status.is_terminal:
                shared.append(leader_id, seq + 1, ending_event(leader))
                return
            # The leader's followers here wait on the same event: each checks before it clears.
            moved = leader.place.moved
            moved.clear()
            try:
                async with asyncio.timeout(PUBLISH_WAKE_SEC):
                    await moved.wait()
            except TimeoutError:
                pass

    # -- a follower's process ---------------------------------------------------------

    def leader_of(self, key: str) -> RemoteLeader | None:
        """A stand-in for the request answering ``key`` in another process, if one does."""
        leader_id = self.shared.leader(key)
        if leader_id is None or self._is_local(leader_id):
            return None
        return RemoteLeader(leader_id, key)

    def follow(self, ticket: Ticket, remote: RemoteLeader | None) -> bool:
        """Make the ticket follow ``remote`` (or whoever now answers its key here)."""
        key = ticket.share.cache_key
        if key is None:
            return False
        if remote is not None and self.sharing.leader_of(key) is None:
            self.sharing.inflight[key] = remote
            remote.reader = self._spawn(self._read(remote))
        return self.sharing.follow(ticket, key)

    async def _read(self, remote: RemoteLeader) -> None:
        """Feed the stand-in with the relayed answer until it ends or nobody follows."""
        ending: Ending | None = None
        try:
            ending = await self._relayed(remote)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Following request %s in another process failed", remote.request_id)
        finally:
            if ending is None:
                message = "The answer this request was waiting for stopped; please ask again."
                ending = Ending.silent(Status.CANCELLED, ev.CODE_UNAVAILABLE, message)
            self._settle(remote, ending)

    async def _relayed(self, remote: RemoteLeader) -> Ending | None:
        shared, leader_id = self.shared, remote.request_id
        share = remote.share
        parts = share.answer_parts
        assert parts is not None
        cursor = misses = failures = 0
        quiet_since = time.monotonic()
        await self._want(leader_id)
        while share.followers:
            try:
                entries = await shared.read(leader_id, cursor, QUIET_CHECK_SEC)
                failures = 0
            except LogTrimmed:
                return _lost("Part of the answer was lost; please ask again.")
            except Exception as exc:
                stay_cancelled()
                failures += 1
                if failures >= READ_FAILURES:
                    logger.warning("Reading request %s's answer failed (%s)", leader_id, exc)
                    return _lost("The queue service is unreachable; please ask again.")
                await asyncio.sleep(0.1 * failures)
                continue
            stay_cancelled()  # redis-py may have swallowed a cancel
            if entries:
                quiet_since, misses = time.monotonic(), 0
                cursor = entries[-1][0]
                for _, event in entries:
                    if event.is_terminal:
                        return ending_of(event)
                    parts.append(str(event.data))
                remote.place.moved.set()  # its followers stream it live
                continue
            if time.monotonic() - quiet_since < QUIET_CHECK_SEC:
                continue
            quiet_since = time.monotonic()
            if not cursor:
                await self._want(leader_id)  # The leader's process may not have heard.
            try:
                alive = await shared.alive(leader_id)
            except Exception:
                stay_cancelled()
                alive = True  # Cannot tell: the reads will say if Redis is gone.
            misses = 0 if alive else misses + 1
            if misses >= DEAD_AFTER_MISSES:
                # Twice (its ending may have been on its way): in no process's line or slots.
                return _lost("The server answering this question stopped; please ask again.")
        return None

    async def _want(self, leader_id: str) -> None:
        try:
            await self.shared.want(leader_id)
        except Exception as exc:
            stay_cancelled()
            logger.info("Could not ask for request %s's answer (%s)", leader_id, exc)

    def _settle(self, remote: RemoteLeader, ending: Ending) -> None:
        """The leader ended: its followers here end the same way (or go back in line)."""
        if remote.record.status.is_terminal:
            return
        remote.ending = ending
        remote.record.mark_finished(ending.status, ending.code, ending.message)
        self._fall_back(self.sharing.finished(remote), ending)


def _lost(message: str) -> Ending:
    return Ending.failed(ev.CODE_UNAVAILABLE, message, Status.FAILED)


def ending_event(leader: Ticket) -> ev.Event:
    """How the leader ended, as the relayed answer's last event (a terminal one)."""
    ending, status = leader.ending, leader.record.status
    event = ending.event if ending is not None else None
    data = {
        "status": status.value,
        "code": ending.code if ending is not None else None,
        "message": ending.message if ending is not None else None,
        "event": event.data if event is not None else None,
    }
    return ev.Event(event.name if event is not None else ev.ERROR, data)


def ending_of(event: ev.Event) -> Ending:
    """The leader's ending, from the relayed answer's last event."""
    data = event.data
    raw = data.get("event")
    return Ending(
        Status(data["status"]),
        data.get("code"),
        data.get("message"),
        ev.Event(event.name, raw) if raw is not None else None,
    )
