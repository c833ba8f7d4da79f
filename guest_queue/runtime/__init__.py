"""The process's queue manager: built from settings on first use, rebuilt when they change."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..checks import startup_problems
from ..conf import app_settings
from ..core.backends import backend_path
from ..core.manager import QueueManager
from ..history.writer import HistoryWriter
from ..observe import metrics, request_log
from ..workflows.base import Workflow
from .answer_cache import DjangoAnswerCache
from .site_lock import claim_local_queue

logger = logging.getLogger("guest_queue")

_lock = threading.Lock()
_manager: QueueManager | None = None
_history: HistoryWriter | None = None
_closing: set[asyncio.Task[None]] = set()
# Writers whose close() was scheduled on a loop that may end before it finishes.
_unclosed: set[HistoryWriter] = set()


class Misconfigured(ImproperlyConfigured):
    """The app's system checks fail: the queue does not start (the message lists them)."""


def build_workflow() -> Workflow:
    """Instantiate the configured workflow class (once per manager)."""
    workflow_class = import_string(app_settings.WORKFLOW)
    workflow: Workflow = workflow_class(**app_settings.WORKFLOW_OPTIONS)
    return workflow


def _build() -> tuple[QueueManager, HistoryWriter | None]:
    # The checks `manage.py check` runs: a bad setting stops the queue with their message.
    problems = startup_problems()
    if problems:
        raise Misconfigured("guest_queue cannot start:\n  " + "\n  ".join(problems))
    cache = DjangoAnswerCache() if app_settings.CACHE_ENABLED else None
    manager = QueueManager(app_settings.queue_config(), build_workflow(), cache=cache)
    if backend_path(manager.config.backend) == backend_path("local"):
        warning = claim_local_queue()
        if warning is not None:
            logger.warning("%s", warning)
            manager.add_warning(warning)
    history = None
    if app_settings.HISTORY_ENABLED:
        history = HistoryWriter()
        manager.add_listener(history.add)
        manager.add_closer(history.close)
    # Operations: one log line per finished request, and the Prometheus metrics if enabled.
    manager.add_listener(request_log.log_finished)
    metrics.attach(manager, history)
    return manager, history


def get_manager() -> QueueManager:
    """This process's manager; a manager whose event loop has closed is replaced.

    Raises ``Misconfigured`` while the app's system checks fail.
    """
    global _manager, _history
    with _lock:
        manager = _manager
        if manager is None or (manager.loop is not None and manager.loop.is_closed()):
            if _history is not None:
                _history.abandon()
                _history = None
            _abandon_unclosed()
            manager, _history = _build()
            _manager = manager
        return manager


def get_history() -> HistoryWriter | None:
    """The history writer of this process's manager, when history is enabled."""
    get_manager()
    return _history


def reset_manager() -> None:
    """Forget the manager so the next request builds one from the current settings."""
    global _manager, _history
    with _lock:
        old, _manager = _manager, None
        history, _history = _history, None
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if old is not None and old.loop is not None and running is old.loop:
        # The loop holds tasks only weakly: keep this one until the old manager is closed.
        task = old.loop.create_task(old.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        if history is not None:
            _unclosed.add(history)
            task.add_done_callback(lambda _: _unclosed.discard(history))
    elif history is not None:
        history.abandon()
    if running is None:
        _abandon_unclosed()


def _abandon_unclosed() -> None:
    """Stop writers whose scheduled close() never ran because their loop ended first."""
    for history in list(_unclosed):
        history.abandon()
        _unclosed.discard(history)


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GUEST_"):
        reset_manager()
