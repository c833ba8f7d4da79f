"""When the lean lane may send Django's request signals without a thread hop.

Under ASGI, Django sends ``request_started`` and ``request_finished`` through
``sync_to_async``: two thread hops per request, about half of what a guest API
request costs in CPU. Their built-in receivers only matter for database
connections held by worker threads (``close_old_connections``), for query logs
and cache clients; on the event loop they find nothing to do. So the lane sends
them inline, on the loop, exactly when that is equivalent: only Django's own
receivers are connected, and no database connection is open in any thread.
Otherwise (a site's own receiver, a request-status lookup that opened a
connection, ``CONN_MAX_AGE`` > 0) it hops as Django does.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from django.core.cache import close_caches
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.db.backends.signals import connection_created
from django.dispatch import Signal

BUILTIN_RECEIVERS = frozenset({reset_queries, close_old_connections, close_caches, reset_urlconf})
#: The app's own threads that close their connection when done: the history writer
#: (history.py) and the request-status lookups (history_lookup.py).
SELF_CLOSING_THREADS = ("guest-queue-history", "guest-queue-lookup")

_lock = threading.Lock()
_connections: weakref.WeakSet[Any] = weakref.WeakSet()


def _track(sender: Any, connection: Any, **kwargs: Any) -> None:
    if threading.current_thread().name.startswith(SELF_CLOSING_THREADS):
        return
    with _lock:
        _connections.add(connection)


def track_connections() -> None:
    """Start noting every database connection this process opens (idempotent)."""
    connection_created.connect(_track, dispatch_uid="guest_queue.asgi.request_signals")


def any_connection_open() -> bool:
    with _lock:
        wrappers = list(_connections)
    return any(wrapper.connection is not None for wrapper in wrappers)


def inline_safe(signal: Signal, sender: type) -> bool:
    """Whether sending ``signal`` on the event loop does what Django's thread hop would."""
    try:
        sync_receivers, async_receivers = signal._live_receivers(sender)
    except (AttributeError, TypeError, ValueError):  # another Django: do as Django does
        return False
    if async_receivers or any(r not in BUILTIN_RECEIVERS for r in sync_receivers):
        return False
    return not any_connection_open()
