"""Answering a question once: cache hits, and single flight for identical questions.

A question whose answer is cached streams from the cache without a worker
slot. A question identical to one still being answered follows that one (the
leader) instead of starting the workflow again: when the leader completes,
every follower streams its answer; if it fails, times out or is cancelled, the
followers go back in line on their own (the first becomes the new leader), so
no accepted request is lost with the leader.

Followers take no place in line, but they are bounded: at most
``max_followers`` at once in this process (the queue's size), each one
counted against its client's cap like any other open request.

On a shared queue the leader may be in another process: its followers here
follow a ``RemoteLeader`` standing in for it (see ``relay``), which gets the
answer's chunks as they are produced there and ends as the leader ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..backends.base import Ticket
from ..records import RequestRecord, Status
from .cache import AnswerCache, CachedAnswer, NearDuplicates, answer_key, cacheable

logger = logging.getLogger("guest_queue")

LOOKUP_TIMEOUT_SEC = 1.0


class RemoteLeader(Ticket):
    """A leader answering in another process, as its followers in this one see it."""

    __slots__ = ("reader",)

    def __init__(self, leader_id: str, key: str) -> None:
        super().__init__(RequestRecord(request_id=leader_id, query=""))
        self.share.cache_key = key
        self.share.answer_parts = []
        #: The task reading the leader's answer; stopped when nobody here follows any more.
        self.reader: asyncio.Task[None] | None = None


class AnswerSharing:
    """The cache lookups and the table of questions being answered right now."""

    def __init__(
        self,
        cache: AnswerCache,
        similarity: float | None,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        max_followers: int,
    ) -> None:
        self.cache = cache
        self.near = NearDuplicates(similarity) if similarity else None
        self.inflight: dict[str, Ticket] = {}
        self.max_followers = max_followers
        #: Tickets following a leader right now, in this process.
        self.following = 0
        self._spawn = spawn

    async def find(
        self, query: str, language: str | None = None
    ) -> tuple[str | None, CachedAnswer | None]:
        """The question's key (None: not to be shared), and its cached answer if there is one.

        Questions share an answer only within one language (see ``answer_key``).
        """
        if not cacheable(query):
            return None, None
        key = answer_key(query, language)
        if self.near is not None:
            key = self.near.match(key) or key
        try:
            # A cache that hangs must not hold the guest: answer without it.
            async with asyncio.timeout(LOOKUP_TIMEOUT_SEC):
                return key, await self.cache.get(key)
        except Exception:
            logger.warning("Answer cache lookup failed; answering without it", exc_info=True)
            return key, None

    async def look_up(self, ticket: Ticket) -> tuple[str | None, CachedAnswer | None]:
        """``find`` for the ticket's question, in its language; its key is kept in its share."""
        key, hit = await self.find(ticket.record.query, ticket.request.language)
        ticket.share.cache_key = key
        return key, hit

    def leader_of(self, key: str) -> Ticket | None:
        """The ticket answering ``key`` right now, if any."""
        leader = self.inflight.get(key)
        return None if leader is None or leader.record.status.is_terminal else leader

    @property
    def full(self) -> bool:
        """Whether new requests may follow no more leaders (already accepted ones still may)."""
        return self.following >= self.max_followers

    def follow(self, ticket: Ticket, key: str | None) -> bool:
        """Make the ticket follow the request already answering ``key``, if there is one.

        A ticket without a key is answered on its own and its answer is not stored.
        """
        if key is None:
            return False
        share = ticket.share
        share.cache_key = key
        leader = self.leader_of(key)
        if leader is None:
            return False
        share.leader = leader
        leader.share.followers[ticket] = None
        self.following += 1
        return True

    def lead(self, ticket: Ticket) -> None:
        """The ticket will run the workflow for its key; keep its answer for the cache."""
        share = ticket.share
        assert share.cache_key is not None
        self.inflight[share.cache_key] = ticket
        share.answer_parts = []

    def finished(self, ticket: Ticket) -> list[Ticket]:
        """Settle a finished ticket; returns followers that must go back in line."""
        share = ticket.share
        leader = share.leader
        if leader is not None:
            if ticket in leader.share.followers:
                del leader.share.followers[ticket]
                self.following -= 1
            share.leader = None
            # Its stream may be waiting on the leader's event: wake it (and, harmlessly, the
            # other followers) so it sees how it ended.
            leader.place.moved.set()
            if isinstance(leader, RemoteLeader) and not leader.share.followers:
                self.forget(leader)  # Nobody here reads the answer any more.
            return []
        key = share.cache_key
        if key is None or self.inflight.get(key) is not ticket:
            return []
        del self.inflight[key]
        followers, share.followers = list(share.followers), {}
        self.following -= len(followers)
        for follower in followers:
            follower.share.leader = None
        # Streams of the followers wait on this event: each goes on with its own from now.
        ticket.place.moved.set()
        record = ticket.record
        if record.status is not Status.COMPLETED or share.answer_parts is None:
            return followers
        suggested = ticket.ending.suggested_questions if ticket.ending is not None else ()
        answer = CachedAnswer("".join(share.answer_parts), suggested)
        if not isinstance(ticket, RemoteLeader):  # The leader's own process stores it.
            self._spawn(self._store(key, answer))
        for follower in followers:
            serve_from(follower, answer)
        return []

    def forget(self, leader: RemoteLeader) -> None:
        """Stop following a leader in another process (its followers here have all gone)."""
        key = leader.share.cache_key or ""
        if self.inflight.get(key) is leader:
            del self.inflight[key]
        if leader.reader is not None:
            leader.reader.cancel()

    async def _store(self, key: str, answer: CachedAnswer) -> None:
        try:
            await self.cache.set(key, answer)
        except Exception:
            logger.warning("Answer cache write failed", exc_info=True)
            return
        if self.near is not None:
            self.near.remember(key)


def serve_from(ticket: Ticket, answer: CachedAnswer) -> None:
    """Answer the ticket with a finished answer: no slot, no workflow."""
    ticket.share.replay = answer
    ticket.record.cached = True
    if ticket.record.started_mono is None:  # A follower streaming live has started already.
        ticket.record.mark_started()
    ticket.place.wake.set()
