"""The process's queue manager: built from settings on first use, rebuilt when they change."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from .conf import app_settings
from .core.manager import QueueManager
from .workflows.base import Workflow

_lock = threading.Lock()
_manager: QueueManager | None = None
_closing: set[asyncio.Task[None]] = set()


def build_workflow() -> Workflow:
    """Instantiate the configured workflow class (once per manager)."""
    workflow_class = import_string(app_settings.WORKFLOW)
    workflow: Workflow = workflow_class()
    return workflow


def get_manager() -> QueueManager:
    """This process's manager; a manager whose event loop has closed is replaced."""
    global _manager
    with _lock:
        manager = _manager
        if manager is None or (manager.loop is not None and manager.loop.is_closed()):
            manager = _manager = QueueManager(app_settings.queue_config(), build_workflow())
        return manager


def reset_manager() -> None:
    """Forget the manager so the next request builds one from the current settings."""
    global _manager
    with _lock:
        old, _manager = _manager, None
    if old is not None and old.loop is not None and not old.loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is old.loop:
            # The loop holds tasks only weakly: keep this one until the old manager is closed.
            task = old.loop.create_task(old.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GUEST_"):
        reset_manager()
