"""Sharing's part of a request: what answering one question for several guests keeps.

Every ticket has one ``Share`` (``ticket.share``). Only the sharing code writes it:
``sharing`` (cache hits, leaders and followers), ``relay`` (a leader in another
process) and the stream's sharing steps (a leader's chunks kept, a follower's
progress through them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..backends.base import Ticket
    from .cache import CachedAnswer


class Share:
    """A ticket's part in a shared answer: all None/empty when the cache is off."""

    __slots__ = (
        "answer_parts",
        "cache_key",
        "detached",
        "followers",
        "forwarded_chars",
        "forwarded_parts",
        "leader",
        "replay",
    )

    def __init__(self) -> None:
        #: The question's key in the cache and among the answers being produced.
        self.cache_key: str | None = None
        #: A leader's whole answer so far, kept only to be cached when it completes.
        self.answer_parts: list[str] | None = None
        #: A finished answer this ticket streams instead of running the workflow.
        self.replay: CachedAnswer | None = None
        #: The ticket already answering the same question, which this one follows.
        self.leader: Ticket | None = None
        #: Insertion-ordered, so a follower leaves in O(1) and the first one leads next.
        self.followers: dict[Ticket, None] = {}
        #: How much of its leader's answer a follower has streamed live (chunks, characters).
        self.forwarded_parts = 0
        self.forwarded_chars = 0
        #: Its guest left (why: a code) while others follow its answer: the answer runs on
        #: for them, driven without the guest (see ``QueueManager.leave``).
        self.detached: str | None = None

    def detach(self, code: str | None) -> bool:
        """Its guest has left (``code``) while others follow its answer; True the first time."""
        if self.detached is not None:
            return False
        self.detached = code
        return True
