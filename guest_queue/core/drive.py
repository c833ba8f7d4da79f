"""The driver's part of a request: the task running its workflow, and what stops it.

Every ticket has one ``Drive`` (``ticket.drive``). Its stream (``stream``, or the
resumable driver in ``resume``) marks it started and sets ``nudge`` while it reads
the workflow's output; ``stopping`` tracks the workflow's task and asks a stream to
stop at a drain (the manager, when it hands a waiting request to another process).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable


class StopReason(enum.Enum):
    """Why a ticket's stream is made to stop from outside; the value is its error code."""

    #: The server drains: the request ends with ``shutting_down``.
    SHUTTING_DOWN = "shutting_down"
    #: Draining, its place was left to another process sharing the queue (it ends there).
    HANDED_OFF = "handed_off"


class Drive:
    """How a request is being driven."""

    __slots__ = ("busy", "deadline", "nudge", "requeues", "retry_at", "started", "stop", "task")

    def __init__(self) -> None:
        #: Its stream has started (read by a connection, or by a resumable request's
        #: driver): until then, a request whose client has gone is released unstarted.
        self.started = False
        #: Wakes the stream reading the workflow's output (set while one does).
        self.nudge: Callable[[], None] | None = None
        #: Set from outside to make the stream stop (a drain: with its reason's code).
        self.stop: StopReason | None = None
        #: The task running the workflow, while it runs.
        self.task: asyncio.Task[None] | None = None
        #: When its answer must be done (monotonic): its first admission plus the request
        #: timeout, kept when it goes back in line.
        self.deadline: float | None = None
        #: Times its upstream was busy and it went back to the front of the line.
        self.requeues = 0
        #: The busy upstream's message while it waits in line again (its error if it
        #: cannot be answered in time).
        self.busy: str | None = None
        #: When the busy upstream said to try again (monotonic): its wait is at least that.
        self.retry_at: float | None = None
