"""Runs one workflow in its own task and hands its output over a bounded channel.

The workflow runs apart from the stream that sends its output, so cancelling
it (timeout, disconnect, shutdown) never cancels the server's own send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from . import events as ev
from .endings import Ending
from .workflow import (
    Workflow,
    WorkflowBusy,
    WorkflowError,
    WorkflowItem,
    WorkflowRequest,
    WorkflowUnavailable,
)

logger = logging.getLogger("guest_queue")

#: Chunks buffered between the workflow and a slow client before the workflow waits.
CHANNEL_SIZE = 64
GENERIC_FAILURE = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to deliver: the stream should look at its ticket again."""


@dataclass(frozen=True, slots=True)
class Busy:
    """The workflow raised ``WorkflowBusy``: its upstream is overloaded (the stream decides
    whether the request goes back in line or ends)."""

    retry_after_sec: float | None
    message: str
    #: When it was raised (monotonic): the wait runs from then, not from when it is read.
    at: float


ChannelItem = WorkflowItem | Ending | Wake | Busy


class Channel:
    """A bounded FIFO from one workflow's task to the one stream that reads it.

    ``asyncio.Queue``'s ``put``/``get``, made for exactly one writer and one reader at
    a time (the runner and the stream): no task accounting, no lists of waiters, a few
    attribute reads per item instead of a dozen calls. A full channel makes ``put``
    wait (the workflow runs at most ``maxsize`` items ahead of a slow client); ``get``
    on an empty one waits for the next item. Either wait may be cancelled: the item
    stays in the channel.
    """

    __slots__ = ("_getter", "_items", "_maxsize", "_putter")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[ChannelItem] = deque()
        self._maxsize = maxsize
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: ChannelItem) -> None:
        """Add ``item``; ``asyncio.QueueFull`` when the channel is full."""
        if len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, item: ChannelItem) -> None:
        """Add ``item``, first waiting for room."""
        while len(self._items) >= self._maxsize:
            self._putter = putter = asyncio.get_running_loop().create_future()
            try:
                await putter
            finally:
                if self._putter is putter:
                    self._putter = None
        self.put_nowait(item)

    def get_nowait(self) -> ChannelItem:
        """The oldest item; ``asyncio.QueueEmpty`` when there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        putter = self._putter
        if putter is not None:
            self._putter = None
            if not putter.done():
                putter.set_result(None)
        return item

    async def get(self) -> ChannelItem:
        """The oldest item, first waiting for one."""
        while not self._items:
            self._getter = getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        return self.get_nowait()


async def run_workflow(
    workflow: Workflow,
    request: WorkflowRequest,
    channel: Channel,
    on_unavailable: Callable[[], None],
) -> None:
    """Feed the workflow's output into ``channel``, then how it ended (an ``Ending``).

    A failure's message is safe to show to the guest. An item that cannot go on the
    wire as strict JSON stops the workflow and ends the request (``workflow_output``).
    """
    try:
        stream = workflow.stream(request)
        closing = contextlib.aclosing(cast(Any, stream)) if hasattr(stream, "aclose") else None
        ending = Ending.completed()
        async with closing or contextlib.nullcontext():
            async for item in stream:
                # A text chunk always encodes: only the rare dict item is checked.
                if type(item) is not str and (problem := unsendable(item)) is not None:
                    logger.error(
                        "Workflow %s yielded output that cannot be sent for request %s (%s); "
                        "the request ends with %s",
                        _name(workflow),
                        request.request_id,
                        problem,
                        ev.CODE_WORKFLOW_OUTPUT,
                    )
                    ending = Ending.failed(ev.CODE_WORKFLOW_OUTPUT, GENERIC_FAILURE)
                    # Leaving the block closes the workflow; its clean-up runs to its end
                    # before the ending frees the slot (a freed slot's task is cancelled).
                    break
                if channel.full():
                    await channel.put(item)
                else:
                    channel.put_nowait(item)  # no coroutine to make: most items
        await channel.put(ending)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.QueueFull):
            channel.put_nowait(Wake())
        raise
    except WorkflowBusy as exc:
        await channel.put(Busy(exc.retry_after_sec, exc.message, time.monotonic()))
    except WorkflowError as exc:
        await channel.put(Ending.failed(ev.CODE_WORKFLOW_ERROR, exc.message or GENERIC_FAILURE))
    except WorkflowUnavailable as exc:
        on_unavailable()
        await channel.put(Ending.failed(ev.CODE_UNAVAILABLE, exc.message))
    except Exception:
        logger.exception("Workflow failed for request %s", request.request_id)
        await channel.put(Ending.failed(ev.CODE_INTERNAL, GENERIC_FAILURE))


def unsendable(item: object) -> str | None:
    """Why the part of a workflow's item that reaches the guest cannot be sent; None if it can.

    That part is a custom event's data or a ``workflow_complete`` payload, which must be
    strict JSON, or an ``answer_chunk`` item's data, which must be text. Text always
    encodes; an ``error`` item's message becomes text; the queue's own names are dropped
    and anything but a dict with a string ``"event"`` is ``translate``'s to refuse.
    """
    if not isinstance(item, dict):
        return None
    name, data = item.get("event"), item.get("data")
    if type(data) is str or not isinstance(name, str) or name in ev.RESERVED_EVENTS:
        return None
    if name == ev.ANSWER_CHUNK:
        return None if isinstance(data, str) else f"answer_chunk data of type {type(data).__name__}"
    if name == ev.WORKFLOW_COMPLETE and not isinstance(data, dict):
        return None  # Sent as an empty payload.
    return ev.json_problem(data)


def _name(workflow: Workflow) -> str:
    """The workflow's class by its dotted path, as ``GUEST_WORKFLOW`` names it."""
    kind = type(workflow)
    return f"{kind.__module__}.{kind.__qualname__}"
