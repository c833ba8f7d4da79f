"""Answering a question once: cache hits, and single flight for identical questions.

A question whose answer is cached streams from the cache without a worker
slot. A question identical to one still being answered follows that one (the
leader) instead of starting the workflow again: when the leader completes,
every follower streams its answer; if it fails, times out or is cancelled, the
followers go back in line on their own (the first becomes the new leader), so
no accepted request is lost with the leader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..backends.base import Ticket
from ..records import Status
from .cache import AnswerCache, CachedAnswer, NearDuplicates, question_key

logger = logging.getLogger("guest_queue")

LOOKUP_TIMEOUT_SEC = 1.0


class AnswerSharing:
    """The cache lookups and the table of questions being answered right now."""

    def __init__(
        self,
        cache: AnswerCache,
        similarity: float | None,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.cache = cache
        self.near = NearDuplicates(similarity) if similarity else None
        self.inflight: dict[str, Ticket] = {}
        self._spawn = spawn

    async def find(self, query: str) -> tuple[str, CachedAnswer | None]:
        """The question's key, and its cached answer if there is one."""
        key = question_key(query)
        if self.near is not None:
            key = self.near.match(key) or key
        try:
            # A cache that hangs must not hold the guest: answer without it.
            async with asyncio.timeout(LOOKUP_TIMEOUT_SEC):
                return key, await self.cache.get(key)
        except Exception:
            logger.warning("Answer cache lookup failed; answering without it", exc_info=True)
            return key, None

    def follow(self, ticket: Ticket, key: str) -> bool:
        """Make the ticket follow the request already answering ``key``, if there is one."""
        ticket.cache_key = key
        leader = self.inflight.get(key)
        if leader is None or leader.record.status.is_terminal:
            return False
        ticket.leader = leader
        ticket.position = max(leader.position, 1)
        leader.followers.append(ticket)
        return True

    def lead(self, ticket: Ticket) -> None:
        """The ticket will run the workflow for its key; keep its answer for the cache."""
        assert ticket.cache_key is not None
        self.inflight[ticket.cache_key] = ticket
        ticket.answer_parts = []

    def finished(self, ticket: Ticket) -> list[Ticket]:
        """Settle a finished ticket; returns followers that must go back in line."""
        if ticket.leader is not None:
            if ticket in ticket.leader.followers:
                ticket.leader.followers.remove(ticket)
            ticket.leader = None
            return []
        key = ticket.cache_key
        if key is None or self.inflight.get(key) is not ticket:
            return []
        del self.inflight[key]
        followers, ticket.followers = ticket.followers, []
        for follower in followers:
            follower.leader = None
        record = ticket.record
        if record.status is not Status.COMPLETED or ticket.answer_parts is None:
            return followers
        suggested = ()
        if ticket.terminal_event is not None and isinstance(ticket.terminal_event.data, dict):
            suggested = tuple(ticket.terminal_event.data.get("suggested_questions") or ())
        answer = CachedAnswer("".join(ticket.answer_parts), suggested)
        self._spawn(self._store(key, answer))
        for follower in followers:
            serve_from(follower, answer)
        return []

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
    ticket.replay = answer
    ticket.record.cached = True
    ticket.record.mark_started()
    ticket.wake.set()
