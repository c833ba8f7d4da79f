"""Resumable requests: a driver task writes the stream into a log, connections read it.

A resumable request is driven by a background task, not by the connection
that asked it: the task runs the request's stream and appends each event to
the request's ``EventLog``. Connections are readers of that log, one at a time
(a newer reader replaces the older one; with a shared queue, a newer reader on
any process: a reader on another process claims the request in Redis, every
process closes its older readers when it hears of a claim, and a reader here
claims it too once a reader elsewhere has). While
nobody reads, a grace timer
runs; when it fires the request ends as cancelled, exactly as if a plain
stream's client had gone. A finished log is kept for the same grace period,
then dropped; the ids of dropped logs are remembered (boundedly) so a late
resume can be told "expired" rather than "unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .backends.base import Ticket
from .config import QueueConfig
from .eventlog import EventLog, LogTrimmed, SharedLogs
from .supervise import stay_cancelled

logger = logging.getLogger("guest_queue")

#: Ids of dropped logs remembered to answer "expired" (410) rather than "unknown" (404).
EXPIRED_MEMORY = 10_000
#: A reader on another process says it is attached for this long, renewing it as it reads.
REMOTE_ATTACH_SEC = 4.0


class Unclaimed(enum.Enum):
    """What an attached reader's claim is when it holds no number (yet)."""

    #: It claimed nothing: the first reader (nobody ever read elsewhere), or none at all.
    NONE = "none"
    #: Its claim has been asked of Redis and has not come back yet.
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Held:
    """The attached reader holds claim ``number`` in Redis."""

    number: int


#: The attached reader's claim: none, on its way, or held with its number.
ReaderClaim = Unclaimed | Held
#: A remote reader ends its stream once the request was found nowhere this many times in a row.
DEAD_AFTER_MISSES = 2

EventSource = Callable[[Ticket], AsyncIterator[ev.Event | None]]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]


class LogExpired(Exception):
    """The request was resumable, but its log is gone."""


class UnknownRequest(LookupError):
    """No resumable request has this id (never seen, not resumable, or long gone)."""


class NotSentYet(ValueError):
    """A resume asked for the messages after one that has not been sent yet."""

    def __init__(self, after: int) -> None:
        super().__init__(f"No event {after} has been sent yet.")
        self.after = after


class Claim:
    """A reader's claim on a request (shared queue): any newer claim replaces it."""

    __slots__ = ("newest", "number", "on_taken", "replaced")

    def __init__(self, on_taken: Callable[[int], None] | None = None) -> None:
        #: Its number once taken (0: not yet); the newest number heard of for the request.
        self.number = 0
        self.newest = 0
        self.on_taken = on_taken
        #: Set once a newer claim exists: the reader closes.
        self.replaced = asyncio.Event()

    def taken(self, number: int) -> None:
        self.number = number
        if self.on_taken is not None:
            self.on_taken(number)
        self.heard(number)

    def heard(self, number: int) -> None:
        self.newest = max(self.newest, number)
        if self.number and self.newest > self.number:
            self.replaced.set()


class Resumable:
    """One resumable request: its ticket, its log, the task driving it, who reads it."""

    __slots__ = ("claim", "driver", "log", "newest", "reader", "ticket", "timer")

    def __init__(self, ticket: Ticket, log: EventLog) -> None:
        self.ticket = ticket
        self.log = log
        self.driver: asyncio.Task[Any] | None = None
        #: The attached reader's token; None while nobody reads.
        self.reader: object | None = None
        #: The attached reader's claim.
        self.claim: ReaderClaim = Unclaimed.NONE
        #: The newest claim heard of, on any process (0: no reader elsewhere, ever).
        self.newest = 0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def request_id(self) -> str:
        return self.ticket.request_id


class Resumes:
    """This process's resumable requests by id."""

    def __init__(
        self,
        config: QueueConfig,
        source: EventSource,
        spawn: Spawn,
        shared: SharedLogs | None = None,
    ) -> None:
        self.config = config
        self._source = source
        self._spawn = spawn
        #: Where every process can read the logs (a shared queue), if anywhere.
        self.shared = shared
        self.by_id: dict[str, Resumable] = {}
        #: Finished logs kept for late resumes, oldest first, with their clients: bounded
        #: per client and in total, so a guest asking cached questions in a loop keeps no
        #: more than its share alive (see ``_keep``).
        self._kept: OrderedDict[str, str] = OrderedDict()
        #: Claims of this process's readers of requests other processes drive.
        self.remote: dict[str, list[Claim]] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.by_id)

    def open(self, ticket: Ticket, earlier: list[tuple[int, ev.Event]] | None = None) -> Resumable:
        """Start driving an accepted ticket in the background; nobody reads it yet.

        ``earlier``: the events another process already sent (an adopted request).
        """
        log = EventLog(self.config.resume_log_max_events, self.config.resume_log_max_bytes)
        for seq, event in earlier or ():
            log.last_seq = seq - 1
            log.append(event)
        if not earlier:
            # Nobody reads yet (the POST's reader attaches a moment later): keep it all.
            log.pin(0)
        res = Resumable(ticket, log)
        # Its driver is its stream: whatever happens to the HTTP request, it has started.
        ticket.drive.started = True
        self.by_id[ticket.request_id] = res
        res.driver = self._spawn(self._drive(res))
        self._start_grace(res)
        return res

    def get(self, request_id: str) -> Resumable:
        """The live or recently finished request; ``LogExpired`` or ``KeyError`` if not."""
        res = self.by_id.get(request_id)
        if res is not None:
            return res
        if request_id in self._expired:
            raise LogExpired(request_id)
        raise KeyError(request_id)

    async def read(self, res: Resumable, after: int, *, with_ids: bool) -> AsyncIterator[bytes]:
        """The log's messages after ``after`` as SSE, then live ones, to the terminal event.

        Attaching replaces any other reader (its stream ends), on any process;
        leaving starts the grace timer. Idle readers get heartbeats.
        """
        token = object()
        # Older readers elsewhere must hear of this one; if none was ever heard of, every
        # older reader is here (replaced below): no need to ask Redis.
        claiming = self.shared is not None and res.newest > 0
        self._attach(res, token, after, Unclaimed.PENDING if claiming else Unclaimed.NONE)
        if claiming:
            # Replaying need not wait for Redis: the claim is settled alongside.
            self._spawn(self._claim(res, token))
        log, request_id, cursor = res.log, res.request_id, after
        heartbeat = self.config.heartbeat_sec
        try:
            while res.reader is token:
                try:
                    entries = log.read_after(cursor)
                except LogTrimmed:
                    # Never end without a terminal event: the guest asks again.
                    lost = ev.error_event(ev.CODE_UNAVAILABLE, "Part of the answer is lost.")
                    yield lost.encode(request_id, log.last_seq, with_id=with_ids)
                    return
                if entries:
                    cursor = entries[-1][0]
                    yield b"".join(e.encode(request_id, s, with_id=with_ids) for s, e in entries)
                    if res.reader is token:
                        log.pin(cursor)
                    if entries[-1][1].is_terminal:
                        return
                    continue
                if log.finished:
                    return
                changed = log.changed()
                try:
                    async with asyncio.timeout(heartbeat):
                        await changed.wait()
                except TimeoutError:
                    yield ev.HEARTBEAT_BYTES
        finally:
            if res.reader is token:
                claim = res.claim
                self._detach(res)
                if isinstance(claim, Held):
                    self._spawn(self._unclaim(res.request_id, claim.number))

    async def _claim(self, res: Resumable, token: object) -> None:
        """Claim the request for a reader that has just attached here (see ``heard_claim``)."""
        assert self.shared is not None
        try:
            number = await self.shared.claim(res.request_id, REMOTE_ATTACH_SEC)
        except Exception as exc:
            logger.warning("Could not claim request %s in Redis (%s)", res.request_id, exc)
            if res.reader is token:
                res.claim = Unclaimed.NONE
            return
        if res.reader is not token:
            await self._unclaim(res.request_id, number)  # It has gone already.
        elif res.newest > number:
            self._detach(res)  # A newer reader attached elsewhere meanwhile.
        else:
            res.claim, res.newest = Held(number), number

    async def read_remote(
        self,
        request_id: str,
        after: int,
        *,
        with_ids: bool,
        alive: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bytes]:
        """``read_shared`` for a request another process drives; a newer reader closes it."""
        assert self.shared is not None
        claim = Claim(functools.partial(self.heard_claim, request_id))
        self.remote.setdefault(request_id, []).append(claim)
        try:
            async for part in read_shared(
                self.shared,
                request_id,
                after,
                with_ids=with_ids,
                heartbeat=self.config.heartbeat_sec,
                alive=alive,
                claim=claim,
            ):
                yield part
        finally:
            claims = self.remote.get(request_id, [])
            if claim in claims:
                claims.remove(claim)
            if not claims:
                self.remote.pop(request_id, None)
            if claim.number and not claim.replaced.is_set():
                self._spawn(self._unclaim(request_id, claim.number))

    def heard_claim(self, request_id: str, number: int) -> None:
        """A reader claimed the request (on some process): older readers here close.

        ``("", 0)``: claims may have been missed (the subscription was remade): ask Redis.
        """
        if not request_id:
            if self.shared is not None:
                self._spawn(self._recheck_claims())
            return
        res = self.by_id.get(request_id)
        if res is not None:
            res.newest = max(res.newest, number)
            # A reader whose own claim is on its way is settled when it comes back.
            if res.reader is not None and _older(res.claim, number):
                self._detach(res)
        for claim in self.remote.get(request_id, ()):
            claim.heard(number)

    async def _recheck_claims(self) -> None:
        assert self.shared is not None
        ids = [rid for rid, res in self.by_id.items() if res.reader is not None]
        for request_id in [*ids, *self.remote]:
            try:
                number = await self.shared.newest_claim(request_id)
            except Exception:
                return
            if number:
                self.heard_claim(request_id, number)

    async def _unclaim(self, request_id: str, number: int) -> None:
        assert self.shared is not None
        with contextlib.suppress(Exception):  # It lapses by itself in a few seconds.
            await self.shared.unclaim(request_id, number)

    def hand_off(self, request_id: str, retry_ms: int) -> None:
        """Another process will drive this request: tell its reader to reconnect, let go."""
        res = self.by_id.pop(request_id, None)
        if res is None:
            return
        reconnect = ev.Event(ev.RECONNECT, {"retry_ms": retry_ms})
        seq = res.log.append(reconnect)
        if self.shared is not None:
            self.shared.append(request_id, seq, reconnect)
        res.log.close()
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None
        if res.driver is not None:
            res.driver.cancel()

    def _attach(self, res: Resumable, token: object, after: int, claim: ReaderClaim) -> None:
        res.reader = token
        res.claim = claim
        if res.timer is not None and not res.log.finished:
            res.timer.cancel()
            res.timer = None
        # Wakes the reader this one replaces: it sees it is no longer the reader.
        res.log.pin(after)

    def _detach(self, res: Resumable) -> None:
        res.reader = None
        res.claim = Unclaimed.NONE
        res.log.pin(None)
        if not res.log.finished:
            self._start_grace(res)

    def _start_grace(self, res: Resumable) -> None:
        if res.timer is not None:
            res.timer.cancel()
        loop = asyncio.get_running_loop()
        res.timer = loop.call_later(self.config.resume_grace_sec, self._expire, res)

    def _expire(self, res: Resumable) -> None:
        """Nobody came back in time (or the finished log has been kept long enough)."""
        res.timer = None
        if self.shared is not None and not res.log.finished:
            # The guest may have come back through another process: ask before ending it.
            self._spawn(self._expire_unless_attached(res))
            return
        self._end(res)

    async def _expire_unless_attached(self, res: Resumable) -> None:
        assert self.shared is not None
        try:
            attached = await self.shared.attached(res.request_id)
        except Exception:
            logger.warning("Could not ask Redis whether request %s is read", res.request_id)
            attached = False
        if attached and not res.log.finished:
            self._start_grace(res)
        elif res.reader is None and res.timer is None:
            self._end(res)

    def _end(self, res: Resumable) -> None:
        if res.driver is not None and not res.driver.done():
            # The stream's own cleanup ends the request as cancelled: the client has gone.
            res.driver.cancel()
        self._drop(res)

    @property
    def kept_limit(self) -> int:
        """Finished logs kept at most, in all (the oldest beyond it is dropped)."""
        config = self.config
        return max(config.history_limit, config.max_queue_size + config.max_concurrent)

    def _keep(self, res: Resumable) -> None:
        """Keep a finished log for late resumes, within its client's share and the total.

        A client keeps at most as many finished logs as it may have requests open
        (its cap; no share when there is none), and the process at most
        ``kept_limit``: beyond either, the oldest is dropped early (a late resume of
        it is told it expired, as after the grace period).
        """
        client = res.ticket.client
        self._kept[res.request_id] = client
        cap = self.config.max_per_client
        if cap > 0 and client:
            mine = [rid for rid, owner in self._kept.items() if owner == client]
            for request_id in mine[: max(0, len(mine) - cap)]:
                self._drop_kept(request_id)
        while len(self._kept) > self.kept_limit:
            self._drop_kept(next(iter(self._kept)))

    def _drop_kept(self, request_id: str) -> None:
        self._kept.pop(request_id, None)
        res = self.by_id.get(request_id)
        if res is None:
            return
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None
        self._drop(res)
        if self.shared is not None:
            self.shared.drop(request_id)

    def _drop(self, res: Resumable) -> None:
        self._kept.pop(res.request_id, None)
        if self.by_id.get(res.request_id) is res:
            del self.by_id[res.request_id]
            self._expired[res.request_id] = None
            while len(self._expired) > EXPIRED_MEMORY:
                self._expired.popitem(last=False)
        res.log.close()

    async def _drive(self, res: Resumable) -> None:
        log = res.log
        try:
            shared, request_id = self.shared, res.request_id
            async for event in self._source(res.ticket):
                if event is None:
                    if shared is not None:
                        shared.touch(request_id)
                    continue
                seq = log.append(event)
                if shared is not None:
                    shared.append(request_id, seq, event)
                while log.full and log.pinned is not None:
                    # The reader (attached, or the first, not yet) is a whole log behind.
                    await log.changed().wait()
        except Exception:
            logger.exception("Driving resumable request %s failed", res.request_id)
        finally:
            log.close()
            if self.by_id.get(res.request_id) is res:
                # Keep the finished log for the grace period, for late resumes.
                with contextlib.suppress(RuntimeError):
                    self._start_grace(res)
                    self._keep(res)


def _older(claim: ReaderClaim, number: int) -> bool:
    """Whether a reader with ``claim`` is replaced by the claim numbered ``number``."""
    if isinstance(claim, Held):
        return claim.number < number
    return claim is Unclaimed.NONE


async def read_shared(
    shared: SharedLogs,
    request_id: str,
    after: int,
    *,
    with_ids: bool,
    heartbeat: float,
    alive: Callable[[], Awaitable[bool]] | None = None,
    claim: Claim | None = None,
) -> AsyncIterator[bytes]:
    """A request another process drives: its log's messages from Redis, then live ones.

    The reader claims the request (so the driving process does not end it at
    the end of its grace, and older readers anywhere close), and ends at the
    terminal event, when a newer reader claims the request, or when the log is
    gone (the request's process died and its log expired).
    """
    claim = claim if claim is not None else Claim()
    cursor = after
    block = min(heartbeat, REMOTE_ATTACH_SEC / 2)
    quiet_since = time.monotonic()
    misses = 0
    while True:
        try:
            if not claim.number:
                claim.taken(await shared.claim(request_id, REMOTE_ATTACH_SEC))
            elif not await shared.renew(request_id, claim.number, REMOTE_ATTACH_SEC):
                return  # A newer reader holds it (its announcement was missed).
            # redis-py may have swallowed a cancel (it lands as the command is sent): a reader
            # going on would renew its claim for ever, and the request would never end.
            stay_cancelled()
            if claim.replaced.is_set():
                return
            entries = await _read_unless_replaced(shared, request_id, cursor, block, claim)
        except LogTrimmed:
            return
        except Exception as exc:  # Redis unreachable: end the stream, the client resumes.
            stay_cancelled()  # Or a cancel that redis-py turned into an error.
            logger.warning("Reading request %s's log from Redis failed (%s)", request_id, exc)
            return
        if entries is None:
            return  # Replaced by a newer reader: its connection goes on from here.
        if entries:
            quiet_since = time.monotonic()
            cursor = entries[-1][0]
            yield b"".join(e.encode(request_id, s, with_id=with_ids) for s, e in entries)
            if any(e.is_terminal or e.name == ev.RECONNECT for _, e in entries):
                # Ended, or handed off: the client resumes (and another process adopts it).
                return
            continue
        if time.monotonic() - quiet_since >= heartbeat:
            quiet_since = time.monotonic()
            try:
                state = await shared.state(request_id)
            except Exception as exc:
                stay_cancelled()
                logger.warning("Asking Redis for request %s's log failed (%s)", request_id, exc)
                return
            stay_cancelled()
            if state != "live":
                return
            if alive is not None and not await alive():
                # Twice in a row (its terminal event may be on its way the first time):
                # the process driving it died; it is neither waiting nor answered anywhere.
                misses += 1
                if misses >= DEAD_AFTER_MISSES:
                    message = "The server answering this request stopped; please ask again."
                    dead = ev.error_event(ev.CODE_UNAVAILABLE, message)
                    yield dead.encode(request_id, cursor + 1, with_id=with_ids)
                    return
            else:
                misses = 0
            yield ev.HEARTBEAT_BYTES


async def _read_unless_replaced(
    shared: SharedLogs, request_id: str, after: int, block: float, claim: Claim
) -> list[tuple[int, ev.Event]] | None:
    """``shared.read``, given up at once (None) when a newer reader claims the request."""
    read = asyncio.ensure_future(shared.read(request_id, after, block))
    replaced = asyncio.ensure_future(claim.replaced.wait())
    try:
        await asyncio.wait((read, replaced), return_when=asyncio.FIRST_COMPLETED)
    finally:
        replaced.cancel()
        if not read.done():
            read.cancel()
            # A cancelled blocking read closes its connection; redis-py may turn the
            # cancel into an error: either way its outcome is not wanted.
            await asyncio.wait((read,))
            if not read.cancelled():
                read.exception()
    if read.cancelled():
        return None
    if claim.replaced.is_set():
        read.exception()  # Retrieved: not wanted.
        return None
    return read.result()
