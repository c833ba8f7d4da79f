"""The workflow interface: what the queue calls to answer a question.

No Django imports here: workflows are plain asyncio code and can be tested alone.
The names are defined in ``guest_queue.core.workflow`` and re-exported here, the
path workflows import them from.
"""

from ..core.workflow import (
    Workflow,
    WorkflowBusy,
    WorkflowError,
    WorkflowItem,
    WorkflowRequest,
    WorkflowUnavailable,
    is_available,
)

__all__ = [
    "Workflow",
    "WorkflowBusy",
    "WorkflowError",
    "WorkflowItem",
    "WorkflowRequest",
    "WorkflowUnavailable",
    "is_available",
]
