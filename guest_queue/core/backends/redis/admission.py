"""One queue shared by every process (and host) that points at the same Redis.

Redis decides admission (``scripts``: each change is one atomic script);
the workflow runs in the process holding the guest's connection. Every slot
and place is a lease this process renews every third of ``lease_sec``; when a
process dies, its leases run out and the line moves on. Processes hear of
admissions through pub/sub at once; a slow renewal pass (the same third of
``lease_sec``) also corrects positions and anything a lost message missed.

When Redis cannot be reached new requests are refused at once with 503 (for a
second after each failure no connection is even tried), requests already
processing run on, and waiters give up once their leases have run out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from ...config import ConfigProblem, QueueConfig
from ...errors import Unavailable
from ...fairness import CLIENT_LIMIT, NETWORK_LIMIT
from ...ordering import BAND_SEC
from ...records import iso as _iso
from ...supervise import stay_cancelled, supervised
from ..base import Admission, LostCallback, Snapshot, Ticket, limiter_for, ordering_of
from .answers import RedisAnswers
from .handoff import ADOPT, HAND_OFF, KEEP_AFTER_DEADLINE_MS, adopted_ticket, handoff_json
from .limit import SharedLimit
from .link import CLOSE_TIMEOUT_SEC, UNREACHABLE, RedisLink, RedisOptions
from .logs import RedisLogs
from .rates import RedisWindowCounter
from .scripts import CHARGE, ENTER, HOLD, LEAVE, LOCATE, STATUS, SYNC

logger = logging.getLogger("guest_queue")

#: Request ids admitted before this process had registered them, kept this many at most.
EARLY_ADMISSIONS = 256
EVICTION_WARNING = "Redis's maxmemory-policy can evict keys"
#: Removals sent to Redis in one script call at most.
LEAVE_BATCH = 500


def client_ids(ticket: Ticket) -> str:
    """The ids a request counts against in Redis: its client's, then its groups'."""
    ids = [ticket.client, *(group for group, _ in ticket.client_groups)] if ticket.client else []
    # Space-separated in Redis. The Django layer's ids are hex hashes; a core caller's
    # hint with whitespace in it counts under the hint with "_" for each run of it.
    return " ".join("_".join(i.split()) for i in ids)


def group_multiples(ticket: Ticket) -> str:
    """Each group's cap as a multiple of the client's, in the order of ``client_ids``."""
    return " ".join(str(multiple) for _, multiple in ticket.client_groups)


class RedisAdmission(Admission):
    """The shared queue, as seen from this process."""

    name = "redis"

    @classmethod
    def create(cls, config: QueueConfig, *, on_lost: LostCallback, snapshot: Snapshot) -> Admission:
        return cls(config, on_lost=on_lost, snapshot=snapshot)

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> list[ConfigProblem]:
        return RedisOptions.problems(options)

    def __init__(
        self,
        config: QueueConfig,
        *,
        on_lost: LostCallback,
        snapshot: Snapshot,
    ) -> None:
        super().__init__(
            config.max_concurrent,
            config.max_queue_size,
            config.position_update_interval_sec,
            config.max_per_client,
            limiter=limiter_for(config),
            ordering=ordering_of(config),
        )
        self.config = config
        self._on_lost = on_lost
        self._snapshot = snapshot
        self.options = options = RedisOptions(**config.backend_options)
        self.lease_ms = max(1, round(options.lease_sec * 1000))
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.link = RedisLink(options)
        self.renew_every = self.link.renew_every
        self.client = self.link.client
        tag = "{" + options.prefix + "}"
        self.keys = [
            f"{tag}:waiting",
            f"{tag}:active",
            f"{tag}:leases",
            f"{tag}:meta",
            f"{tag}:owners",
            f"{tag}:clients",
            f"{tag}:arrived",
        ]
        self.usage_prefix = f"{tag}:usage:"
        self.channel = f"{tag}:events"
        self.processes_key = f"{tag}:processes"
        self.handoffs_key = f"{tag}:handoffs"
        self.handoff_prefix = f"{tag}:handoff:"
        self.process_key_prefix = f"{tag}:process:"
        self.process_key = self.process_key_prefix + self.process_id
        self._enter = self.client.register_script(ENTER)
        self._hold = self.client.register_script(HOLD)
        self._leave = self.client.register_script(LEAVE)
        self._sync = self.client.register_script(SYNC)
        self._status = self.client.register_script(STATUS)
        self._locate = self.client.register_script(LOCATE)
        self._charge = self.client.register_script(CHARGE)
        #: Slot seconds to charge clients for (``fair``), sent with the next removals.
        self._charges: list[tuple[str, float]] = []
        self.tag = tag
        self._hand_off = self.client.register_script(HAND_OFF)
        self._adopt = self.client.register_script(ADOPT)
        self.logs = RedisLogs(self.link, tag, config, options.timeout_sec)
        self.rates = RedisWindowCounter(self.client, f"{tag}:")
        self.answers = RedisAnswers(
            self.link, tag, self.logs, self.process_id, options.lease_sec, self.keys[:2]
        )
        #: The queue's one limit in use (``limit``): this process's samples out, the limit in.
        self.shared_limit = SharedLimit(
            self.link, config, self.process_id, self.lease_ms, self.keys, self.channel, self.limiter
        )
        self._epoch = ""
        self._queue_size = 0
        self._active_count = 0
        self._leaving: dict[str, None] = {}
        self._leave_now = asyncio.Event()
        self._dirty = asyncio.Event()
        self._early: OrderedDict[str, None] = OrderedDict()
        #: This process's tickets counted against their client without a place (followers,
        #: cache replays): their leases are renewed like the others'.
        self.held: dict[str, Ticket] = {}
        #: Each waiting ticket's score in the shared line (its sort key there), with this
        #: process's monotonic clock when it came back (Redis read its own clock for it a
        #: moment earlier): maps this process's times onto the line. Kept with ``waiting``.
        self._scores: dict[str, tuple[str, float]] = {}
        self._requeues: set[asyncio.Task[None]] = set()
        # A renewal carries the tickets held when it was built: a removal sent while it
        # is on its way would be undone by it, so the two never overlap.
        self._in_order = asyncio.Lock()
        self._closed = False

    # -- what the manager and the streams read ------------------------------------

    @property
    def queue_size(self) -> int:
        return self._queue_size

    @property
    def active_count(self) -> int:
        return self._active_count

    # -- entering and leaving -------------------------------------------------------

    async def enter(self, ticket: Ticket) -> str | None:
        status = await self._join(ticket, force=False)
        return {-1: "queue_full", -2: CLIENT_LIMIT, -3: NETWORK_LIMIT}.get(status)

    async def hold(self, ticket: Ticket) -> str | None:
        if self.max_per_client <= 0 or not ticket.client or ticket.request_id in self.held:
            return None
        self.link.refuse_if_quiet()
        rid = ticket.request_id
        args = [rid, self.lease_ms, self.max_active, self._epoch, self.channel]
        args += [client_ids(ticket), self.max_per_client, group_multiples(ticket)]
        reply = await self.link.run(self._hold, self.keys, args)
        held, epoch, queued, active = reply
        self._heard(epoch, queued, active)
        if held != 1:
            return CLIENT_LIMIT if held == 0 else NETWORK_LIMIT
        self.held[rid] = ticket
        return None

    def rate_counter(self) -> RedisWindowCounter:
        """Rates count in the queue's Redis: every process sharing the queue shares them."""
        return self.rates

    def requeue(self, ticket: Ticket, *, front: bool = False) -> None:
        if front:
            # Its slot is given back by the same script that lines it up again: until that
            # has run it is neither renewed nor admitted here.
            rid = ticket.request_id
            self.active.pop(rid, None)
            self._early.pop(rid, None)  # A late word of its first admission
            ticket.place.admitted = False
            ticket.place.position = 1
        task = asyncio.get_running_loop().create_task(self._requeue(ticket, front))
        self._requeues.add(task)
        task.add_done_callback(self._requeues.discard)

    async def _requeue(self, ticket: Ticket, front: bool) -> None:
        try:
            if front:
                # A renewal built while it still held its slot would put the slot back.
                async with self._in_order:
                    await self._join(ticket, force=True, front=True)
            else:
                await self._join(ticket, force=True)
        except Unavailable:
            if front:
                # It left ``active`` here before the script ran: Redis may still count its
                # slot; give it back with the next leaves rather than at its lease's end.
                self._leaving[ticket.request_id] = None
                self._leave_now.set()
            self._on_lost(ticket, UNREACHABLE)

    def _order_args(self, ticket: Ticket, front: bool) -> list[Any]:
        """ENTER's order arguments (see ``scripts.ENTER``): tier, spacing, offset, half-life."""
        ordering = self.ordering
        if front:
            return ["", 0, -round(BAND_SEC * 1e6), ""]
        if ordering.plain:
            return ["", 0, 0, ""]
        tier = ordering.tier(ticket.record.tier)
        step, band = ordering.spacing(tier)
        half_life = round(ordering.half_life_sec * 1000) if ordering.fair else ""
        return [tier, max(1, round(step * 1e6)), round(band * BAND_SEC * 1e6), half_life]

    def _usage_key(self, client: str) -> str:
        return self.usage_prefix + "_".join(client.split())

    async def _join(self, ticket: Ticket, *, force: bool, front: bool = False) -> int:
        """Enter the shared line; the script's status (negative: refused)."""
        self.link.refuse_if_quiet()
        rid = ticket.request_id
        args = [rid, self.lease_ms, self.max_active, self.max_waiting, self._epoch, self.channel]
        args += [int(force), client_ids(ticket), self.max_per_client, group_multiples(ticket)]
        args += self._order_args(ticket, front)
        keys = self.keys
        if self.ordering.fair and ticket.client:
            keys = [*keys, self._usage_key(ticket.client)]
        reply = await self.link.run(self._enter, keys, args)
        status, position, score, epoch, queued, active = reply
        self._heard(epoch, queued, active)
        if status < 0:
            return int(status)
        # Held without a place until now (a follower lining up): renewed as waiting or active.
        self.held.pop(rid, None)
        if ticket.record.status.is_terminal:
            # The request ended while its place was being taken: give the place back.
            self._leaving[rid] = None
            self._leave_now.set()
        elif status == 1:
            self._admit(ticket)
            ticket.place.position = 1
        else:
            self._line_up(ticket, score, int(position))
            if rid in self._early:
                del self._early[rid]
                self._admit_waiting(rid)
        return int(status)

    def _line_up(self, ticket: Ticket, score: str, position: int) -> None:
        """The ticket waits in the shared line at ``score``, ``position`` in it."""
        rid = ticket.request_id
        self._scores[rid] = (score, time.monotonic())
        ticket.place.position = position
        self.waiting[rid] = ticket

    def _off_line(self, rid: str) -> Ticket | None:
        """Take a ticket out of the line here (it leaves, is admitted or handed off)."""
        self._scores.pop(rid, None)
        return self.waiting.pop(rid, None)

    def line_score(self, ticket: Ticket) -> tuple[str, float] | None:
        if self.waiting.get(ticket.request_id) is not ticket:
            return None
        return self._scores.get(ticket.request_id)

    def leave(self, ticket: Ticket) -> None:
        rid = ticket.request_id
        if self._off_line(rid) is None:
            if self.active.pop(rid, None) is not None:
                held = self._slot_given_back(ticket)
                if held is not None and self.ordering.fair and ticket.client:
                    self._charges.append((ticket.client, held))
            elif self.held.pop(rid, None) is None:
                return
        self._leaving[rid] = None
        self._leave_now.set()

    async def _send_leaves(self) -> None:
        while True:
            await self._leave_now.wait()
            self._leave_now.clear()
            if not self._leaving:
                continue
            await self._send_charges()
            rids = list(self._leaving)[:LEAVE_BATCH]
            args = [self.lease_ms, self.max_active, self._epoch, self.channel, *rids]
            try:
                async with self._in_order:
                    epoch, queued, active, admitted = await self.link.run(
                        self._leave, self.keys, args
                    )
            except Unavailable:
                continue  # The next renewal pass tries again.
            finally:
                stay_cancelled()  # redis-py may have swallowed a cancel
            for rid in rids:
                self._leaving.pop(rid, None)
            if self._leaving:
                self._leave_now.set()
            self._heard(epoch, queued, active)
            self._admitted(admitted)

    async def _send_charges(self) -> None:
        """Charge clients the slot seconds their requests held (``fair``)."""
        if not self._charges:
            return
        charges, self._charges = self._charges[:LEAVE_BATCH], self._charges[LEAVE_BATCH:]
        keys = [self._usage_key(client) for client, _ in charges]
        args = [round(self.ordering.half_life_sec * 1000), *(held for _, held in charges)]
        try:
            await self.link.run(self._charge, keys, args)
        except Unavailable:
            # Lost: the order is less fair for a while, never wrong.
            logger.info("Could not charge %d client(s) for their answers", len(charges))
        finally:
            stay_cancelled()  # redis-py may have swallowed a cancel

    def _admitted(self, rids: list[str]) -> None:
        """Start this process's requests among those Redis just admitted."""
        for rid in rids:
            if not self._admit_waiting(rid):
                # Perhaps one whose enter() reply has not been read yet.
                self._early[rid] = None
                if len(self._early) > EARLY_ADMISSIONS:
                    self._early.popitem(last=False)

    def _admit_waiting(self, rid: str) -> bool:
        ticket = self._off_line(rid)
        if ticket is None:
            return False
        self._admit(ticket)
        return True

    # -- the limit in use -------------------------------------------------------------

    @property
    def limit_version(self) -> int:
        return self.shared_limit.version

    def wants_samples(self) -> bool:
        return self.shared_limit.wants_samples()

    def sample(self, version: int, ttfc_sec: float) -> None:
        """Sent to Redis with the next pass: the limiter's lease holder decides."""
        self.shared_limit.sample(version, ttfc_sec)

    def upstream_busy(self, retry_after_sec: float) -> None:
        self.shared_limit.busy(retry_after_sec)

    def _limit_read(self, limit: int) -> None:
        self.max_active = limit
        self.ordering.slots = max(1, limit)

    # -- background work ------------------------------------------------------------

    async def run(self) -> None:
        """Renew leases, correct positions, and listen for admissions, until cancelled."""
        await self.check_eviction()
        helpers = [
            asyncio.create_task(
                supervised("redis listener", lambda: self.link.listen(self.channel, self._heard_of))
            ),
            asyncio.create_task(supervised("redis leaves", self._send_leaves)),
            asyncio.create_task(
                supervised("redis limiter", lambda: self.shared_limit.run(self._limit_read))
            ),
        ]
        try:
            renew_at = time.monotonic() + self.renew_every
            while True:
                # Whatever wakes it, the pass runs at least every third of the lease.
                try:
                    async with asyncio.timeout(max(0.0, renew_at - time.monotonic())):
                        await self._dirty.wait()
                except TimeoutError:
                    pass
                self._dirty.clear()
                renew_at = time.monotonic() + self.renew_every
                await self._renew()
                stay_cancelled()  # redis-py may have swallowed a cancel
                await asyncio.sleep(self.update_interval)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.wait(helpers, timeout=CLOSE_TIMEOUT_SEC)

    def _heard_of(self, message: str) -> None:
        """A message on the queue's channel: request ids just admitted, or none."""
        self._admitted(message.split())
        self._dirty.set()

    async def _renew(self) -> None:
        """Renew every lease, learn positions and admissions, publish this process's figures."""
        if self._leaving:
            self._leave_now.set()
        async with self._in_order:
            await self._renew_in_order()

    async def _renew_in_order(self) -> None:
        waiting = list(self.waiting.items())
        args: list[Any] = [self.lease_ms, self.max_active, self._epoch, self.channel]
        # Only a process that records them claims abandoned hand-offs (not one draining).
        claims = self.handoff_prefix if self.on_abandoned is not None else ""
        args += [self.process_id, json.dumps(self._snapshot()), claims]
        for rid, ticket in self.active.items():
            args += [rid, "a", client_ids(ticket)]
        for rid, ticket in self.held.items():
            args += [rid, "h", client_ids(ticket)]
        scores = self._scores
        for rid, ticket in waiting:
            args += [rid, scores[rid][0], client_ids(ticket)]
        keys = [*self.keys, self.process_key, self.processes_key, self.handoffs_key]
        try:
            reply = await self.link.run(self._sync, keys, args)
        except Unavailable:
            if time.monotonic() - self.link.last_ok > self.options.lease_sec:
                # Every lease this process held has run out: nobody keeps these places.
                self._leaving.clear()
                for ticket in list(self.waiting.values()):
                    self._on_lost(ticket, UNREACHABLE)
            return
        epoch, queued, active, lost, positions, abandoned = reply
        self._heard(epoch, queued, active)
        self._abandoned(abandoned)
        if lost:
            logger.warning(
                "%d slot(s) expired before this process renewed them; stopping their answers",
                len(lost),
            )
        for rid in lost:
            holder = self.active.get(rid)
            if holder is not None:
                self._on_lost(holder, "This request's place in the queue expired.")
        for (rid, ticket), position in zip(waiting, positions, strict=True):
            if self.waiting.get(rid) is not ticket:
                continue
            if position == 0:
                self._admit_waiting(rid)
            else:
                self._set_position(ticket, int(position))

    def _abandoned(self, claimed: list[str]) -> None:
        """Hand-offs nobody adopted in time, claimed by this process: record their ending."""
        for rid, data in zip(claimed[::2], claimed[1::2], strict=True):
            if not data:
                logger.warning("Hand-off of request %s expired without its data", rid)
                continue
            ticket = adopted_ticket(rid, data)
            if self.on_abandoned is not None:
                self.on_abandoned(ticket)

    # -- talking to Redis -----------------------------------------------------------

    async def check_eviction(self) -> None:
        """Warn when Redis may evict the queue's keys to make room (a policy shared with a cache).

        ``allkeys-*`` evicts any key; ``volatile-*`` evicts keys that have a TTL, and every
        key of the queue has one (so nothing lingers after the last process). Only
        ``noeviction`` (or no ``maxmemory`` at all) keeps a guest's place from vanishing.
        """
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SEC):
                config = await self.client.config_get("maxmemory*")
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or "timed out"  # A timeout has no text of its own.
            logger.info("Could not read Redis's maxmemory-policy (%s); not checked", reason)
            return
        policy = str(config.get("maxmemory-policy", "noeviction"))
        limit = int(config.get("maxmemory", 0) or 0)
        self.warnings = [w for w in self.warnings if not w.startswith(EVICTION_WARNING)]
        if policy != "noeviction" and limit > 0:
            warning = (
                f"{EVICTION_WARNING} ({policy}, maxmemory {limit} bytes): it may evict the "
                "queue's keys, every one of which has a TTL, and lose guests' places. Set "
                "maxmemory-policy noeviction, or give the queue a Redis of its own."
            )
            self.warnings.append(warning)
            logger.warning("%s", warning)

    def _heard(self, epoch: str, queued: int, active: int) -> None:
        self._epoch = epoch
        self._queue_size = int(queued)
        self._active_count = int(active)

    async def reachable(self) -> bool:
        return await self.link.reachable()

    async def hand_off(
        self,
        tickets: list[Ticket],
        grace_sec: float,
        followers: Sequence[tuple[Ticket, str]] = (),
    ) -> list[Ticket]:
        """Leave the tickets' places (leases kept for ``grace_sec``) for another process;
        ``followers`` (ticket, score) had no place: they line up at their score."""
        by_id = {t.request_id: t for t in tickets if self.waiting.get(t.request_id) is t}
        scores = {t.request_id: score for t, score in followers if t.request_id not in by_id}
        by_id.update((t.request_id, t) for t, _ in followers if t.request_id in scores)
        if not by_id:
            return []
        keys = [self.keys[0], self.keys[2], self.handoffs_key]
        args: list[Any] = [max(1, round(grace_sec * 1000)), KEEP_AFTER_DEADLINE_MS]
        for rid, ticket in by_id.items():
            keys.append(self.handoff_prefix + rid)
            args += [rid, handoff_json(ticket), scores.get(rid, "")]
        async with self._in_order:
            handed = await self.link.run(self._hand_off, keys, args)
            # No longer renewed nor given back by this process; but one admitted here while
            # the script's reply was on its way (pub/sub) stays this process's own.
            gone = []
            for rid in handed:
                if rid in scores:
                    self.held.pop(rid, None)  # its lease is the hand-off's now
                    gone.append(rid)
                elif self.waiting.get(rid) is by_id[rid]:
                    self._off_line(rid)
                    gone.append(rid)
            withdrawn = [rid for rid in handed if rid not in gone]
            if withdrawn:
                try:
                    await self.client.delete(*(self.handoff_prefix + rid for rid in withdrawn))
                    await self.client.zrem(self.handoffs_key, *withdrawn)
                except (RedisError, OSError):
                    logger.warning("Could not withdraw %d hand-off(s) from Redis", len(withdrawn))
        return [by_id[rid] for rid in gone]

    async def adopt(self, request_id: str) -> Ticket | None:
        """Take over a handed-off request: same place in line (or its slot, if admitted)."""
        keys = [*self.keys[:3], self.handoff_prefix + request_id, self.handoffs_key]
        async with self._in_order:
            reply = await self.link.run(self._adopt, keys, [request_id, self.lease_ms])
            if reply is None:
                return None
            data, where, score, rank = reply
            ticket = adopted_ticket(request_id, data)
            if where == "a":
                self._admit(ticket)
            else:
                self._line_up(ticket, score, int(rank))
        self._dirty.set()
        return ticket

    def shared_logs(self) -> RedisLogs:
        """Resumable requests' logs, in Redis Streams: a resume works on any process."""
        return self.logs

    def shared_answers(self) -> RedisAnswers:
        """Who answers which question now, and relayed answers: single flight across processes."""
        return self.answers

    async def locate(self, request_id: str) -> dict[str, Any] | None:
        """What the shared queue knows of a request another process holds."""
        try:
            keys = [self.keys[0], self.keys[1], self.keys[6]]
            found = await self._locate(keys=keys, args=[request_id])
        except (RedisError, OSError):
            return None
        if found[0] == 0:
            return None
        waiting = found[0] == 1
        data: dict[str, Any] = {
            "request_id": request_id,
            "status": "queued" if waiting else "processing",
            # Its arrival: Redis's clock in microseconds when the request lined up.
            "created_at": _iso(int(found[2]) / 1e6) if waiting else None,
            "started_at": None,
            "finished_at": None,
            "wait_ms": None,
            "processing_ms": None,
            "cached": False,
        }
        if waiting:
            data["queue_position"] = int(found[1])
        return data

    async def shared_status(self) -> dict[str, Any]:
        """Figures of the whole queue: its line and slots, and every live process's counts."""
        keys = [self.keys[0], self.keys[1], self.processes_key]
        try:
            queued, active, figures = await self._status(
                keys=keys, args=[self.process_key_prefix, self.process_id]
            )
        except (RedisError, OSError):
            return {"reachable": False}
        return {
            "reachable": True,
            "queue_size": queued,
            "active_requests": active,
            "others": [json.loads(f) for f in figures],
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await super().close()
        for task in list(self._requeues):
            task.cancel()
        await self.logs.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SEC):
                if self._leaving:
                    args: list[Any] = [self.lease_ms, self.max_active, self._epoch, self.channel]
                    await self._leave(keys=self.keys, args=[*args, *self._leaving])
                await self.client.zrem(self.processes_key, self.process_id)
                await self.client.delete(self.process_key)
                await self.shared_limit.close()
        except (RedisError, OSError, TimeoutError):
            logger.warning(
                "Could not hand the queue's slots back to Redis; their leases will run out"
            )
        await self.link.aclose()
