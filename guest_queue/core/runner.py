"""Runs one workflow in its own task and hands its output over a bounded channel.

The workflow runs apart from the stream that sends its output, so cancelling
it (timeout, disconnect, shutdown) never cancels the server's own send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ..workflows.base import (
    Workflow,
    WorkflowError,
    WorkflowItem,
    WorkflowRequest,
    WorkflowUnavailable,
)
from .endings import Ending
from .events import CODE_INTERNAL, CODE_UNAVAILABLE, CODE_WORKFLOW_ERROR

logger = logging.getLogger("guest_queue")

#: Chunks buffered between the workflow and a slow client before the workflow waits.
CHANNEL_SIZE = 64
GENERIC_FAILURE = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to deliver: the stream should look at its ticket again."""


ChannelItem = WorkflowItem | Ending | Wake
Channel = asyncio.Queue[ChannelItem]


async def run_workflow(
    workflow: Workflow,
    request: WorkflowRequest,
    channel: Channel,
    on_unavailable: Callable[[], None],
) -> None:
    """Feed the workflow's output into ``channel``, then how it ended (an ``Ending``).

    A failure's message is safe to show to the guest.
    """
    try:
        stream = workflow.stream(request)
        closing = contextlib.aclosing(cast(Any, stream)) if hasattr(stream, "aclose") else None
        async with closing or contextlib.nullcontext():
            async for item in stream:
                await channel.put(item)
        await channel.put(Ending.completed())
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.QueueFull):
            channel.put_nowait(Wake())
        raise
    except WorkflowError as exc:
        await channel.put(Ending.failed(CODE_WORKFLOW_ERROR, exc.message or GENERIC_FAILURE))
    except WorkflowUnavailable as exc:
        on_unavailable()
        await channel.put(Ending.failed(CODE_UNAVAILABLE, exc.message))
    except Exception:
        logger.exception("Workflow failed for request %s", request.request_id)
        await channel.put(Ending.failed(CODE_INTERNAL, GENERIC_FAILURE))
